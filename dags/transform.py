"""Airflow DAG transform_shared: raw -> dbt standardized -> GX gate -> dbt shared -> GX gate ->
publish. Scheduled on the raw Assets. Logic: plugins/govlake/transform.py."""

from govlake.dag_factory import build_transform_dag

transform_shared = build_transform_dag()
