"""Airflow extraction DAGs, one per department (extract_<dept>), generated from the dataset
metadata in dbt_project/models/staging/*/_*__sources.yml. Logic: plugins/govlake/ingest.py."""

from govlake.dag_factory import extract_dags

globals().update(extract_dags())
