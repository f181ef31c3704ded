"""Builds Airflow DAGs from the dataset metadata: one extraction DAG per department.

DAG files in ``dags/`` only call these factories; everything a DAG needs to know about a
dataset (schedule from its update cycle, owner, docs) comes from ``govlake.metadata``.
"""

from __future__ import annotations

import datetime as dt
import os

from govlake import metadata

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
# most frequent cycle first: a department DAG runs as often as its most frequent feed
_CYCLE_ORDER = ["hourly", "daily", "weekly", "monthly"]


def raw_asset(ds: metadata.Dataset):
    from airflow.sdk import Asset

    return Asset(uri=ds.asset_uri, name=f"raw__{ds.dept}__{ds.name}", group="raw",
                 extra={"dept": ds.dept, "dataset": ds.name})


def _alert_callbacks() -> dict:
    """A failed task raises an alert (once per open problem); a later success closes it."""
    from govlake import alerts

    return {"on_failure_callback": alerts.on_task_failure, "on_success_callback": alerts.on_task_success}


def _dept_doc(dept: str, datasets: list[metadata.Dataset]) -> str:
    d0 = datasets[0]
    lines = [
        f"# Extract {d0.department} ({dept})",
        "",
        f"Owner: **{d0.owner}** ({d0.contact}); source system: {d0.source_system}.",
        "",
        "Finds new deliveries under `landing/`, identifies each file by SHA-256 in the delivery "
        "ledger (a file already ingested is skipped), decodes strictly (utf-8-sig, then gb18030), "
        "checks the columns against the contract and writes raw Parquet with lineage columns. "
        "A file that cannot be read is quarantined with its reason; the other files proceed. "
        "A red task means the extraction code itself failed, not a bad file.",
        "",
        "| dataset | title | cycle | delivery | format | encoding |",
        "|---|---|---|---|---|---|",
    ]
    for d in datasets:
        lines.append(f"| `{d.name}` | {d.title} | {d.update_cycle} | {d.delivery} | {d.format} | {d.encoding} |")
    return "\n".join(lines)


def extract_task(dataset_id: str, up_to: str | None = None) -> dict:
    """The body of an extract task: ingest new deliveries of one dataset, return the summary."""
    from govlake import ingest

    ds = metadata.dataset(dataset_id)
    result = ingest.extract_dataset(ds, up_to=up_to)
    return result.summary()


def build_extract_dag(dept: str, datasets: list[metadata.Dataset]):
    from airflow.sdk.exceptions import AirflowSkipException
    from airflow.sdk import DAG, task

    cycles = sorted({d.update_cycle for d in datasets}, key=_CYCLE_ORDER.index)
    schedule = metadata.UPDATE_CYCLES[cycles[0]][0]
    dag = DAG(
        dag_id=f"extract_{dept}",
        description=f"{datasets[0].department}: landing deliveries -> raw Parquet",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=[f"dept:{dept}", "layer:raw", "extract"],
        default_args={"owner": datasets[0].owner, "retries": 1, "retry_delay": dt.timedelta(minutes=5),
                      **_alert_callbacks()},
        doc_md=_dept_doc(dept, datasets),
    )
    with dag:
        for ds in datasets:
            _make_extract_task(ds, AirflowSkipException, task)()
    return dag


def _make_extract_task(ds: metadata.Dataset, skip_exc, task):
    asset = raw_asset(ds)
    dataset_id = ds.id

    @task(task_id=f"extract_{ds.name}", outlets=[asset], doc_md=f"{ds.title}: {ds.description}")
    def _extract(**context):
        logical = context.get("logical_date")
        up_to = logical.date().isoformat() if logical else None
        summary = extract_task(dataset_id, up_to=up_to)
        context["ti"].xcom_push(key="summary", value=summary)
        if not summary["new_batches"]:
            # nothing new: no asset event, so downstream transforms are not triggered
            raise skip_exc(
                f"{dataset_id}: no new deliveries ({summary['skipped']} skipped, "
                f"{summary['quarantined']} quarantined)")
        context["outlet_events"][asset].extra = {"batches": summary["new_batches"], "rows": summary["rows"]}
        return summary

    return _extract


def extract_dags() -> dict:
    return {f"extract_{dept}": build_extract_dag(dept, dss) for dept, dss in metadata.departments().items()}


# ------------------------------------------------------------------------------ transform
DUCKDB_POOL = "duckdb_writer"


def published_asset(product: str):
    from airflow.sdk import Asset

    return Asset(uri=f"govlake://published/{product}", name=f"published__{product}", group="published",
                 extra={"product": product})


def _run_id(context) -> str:
    from govlake import transform

    return transform.run_id_for(context.get("run_id"))


def build_transform_dag():
    """transform_shared: dbt standardized -> gate -> dbt shared -> gate -> publish.

    Scheduled on data: any raw Asset update (an extraction that landed new batches) triggers
    it. One run at a time and one task at a time: a single writer on the DuckDB file."""
    from airflow.sdk import DAG, task

    from govlake import transform
    from govlake.storage import Lake

    raw = [raw_asset(d) for d in metadata.datasets()]
    schedule = raw[0]
    for a in raw[1:]:
        schedule = schedule | a
    products = transform.shared_products()
    doc = "\n".join([
        "# Transform: standardize, integrate, gate, publish",
        "",
        "Triggered when any department's raw data changes. Tasks, in order:",
        "",
        "1. `dbt_build_standardized` — seeds, staging models (national standards), row quarantine; "
        "dbt tests run with the build.",
        "2. `gate_standardized` — Great Expectations suites in `expectations/standardized/`.",
        "3. `dbt_build_shared` — intermediate dedup and the shared products.",
        "4. `gate_shared` — suites in `expectations/shared/`.",
        "5. `publish` — each product becomes `published/<product>/v=<n>/`, `current` switches atomically, "
        "the publication is audited and the catalog rebuilt.",
        "6. `dbt_docs` — dbt's lineage and model docs as `catalog/dbt_docs.html` (offline).",
        "",
        "Nothing is redone that cannot change: with no batch to standardize (and the same dbt project) steps 1-2 "
        "run no dbt and no suite; when the ledger, the gated batches and the dbt project are those of the last "
        "shared build, step 3 reuses its output files; step 4 carries the verdict of a product whose candidate "
        "has the bytes and inputs of its current version (recorded as skipped in the gate history).",
        "",
        "A red gate task means data failed its checks: nothing was published, the current version stays, "
        "the candidate (`candidate/<run>/`) and the report (`reports/<run>/`) are kept. "
        f"Products: {', '.join(products)}.",
    ])
    dag = DAG(
        dag_id="transform_shared",
        description="raw -> standardized -> shared -> gated, published products",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=1,
        tags=["layer:standardized", "layer:shared", "layer:published", "transform"],
        # a deployment retries a task lost with its worker (GOVLAKE_TRANSFORM_RETRIES, set to 1 in
        # docker-compose.yml and the local cluster); the embedded run fails fast and the next
        # `govlake run` finishes the unpublished work
        default_args={"owner": "govlake-platform", "retries": int(os.environ.get("GOVLAKE_TRANSFORM_RETRIES", "0")),
                      "retry_delay": dt.timedelta(seconds=20), **_alert_callbacks()},
        doc_md=doc,
    )
    with dag:
        @task(task_id="dbt_build_standardized", pool=DUCKDB_POOL)
        def dbt_build_standardized(**context):
            return transform.build_standardized(Lake.default(), _run_id(context))

        @task(task_id="gate_standardized", pool=DUCKDB_POOL)
        def gate_standardized(**context):
            r = transform.gate_standardized(Lake.default(), _run_id(context), dag_id=dag.dag_id,
                                            task_id="gate_standardized")
            return {"success": r.success, "report": str(r.report_path), "docs": str(r.docs_path)}

        @task(task_id="dbt_build_shared", pool=DUCKDB_POOL)
        def dbt_build_shared(**context):
            return transform.build_shared(Lake.default(), _run_id(context))

        @task(task_id="gate_shared", pool=DUCKDB_POOL)
        def gate_shared(**context):
            r = transform.gate_shared(Lake.default(), _run_id(context), dag_id=dag.dag_id, task_id="gate_shared")
            return {"success": r.success, "report": str(r.report_path), "docs": str(r.docs_path),
                    "held": transform.held_products(r)}

        @task(task_id="publish", outlets=[published_asset(p) for p in products])
        def publish(**context):
            from govlake import site

            lake = Lake.default()
            published = transform.publish_layer(lake, _run_id(context))
            site.build_site(lake)  # also when all are unchanged: the catalog shows the audit anchor
            return published

        @task(task_id="dbt_docs", pool=DUCKDB_POOL)
        def dbt_docs(**context):
            return transform.build_docs(Lake.default(), _run_id(context))

        @task(task_id="held_products")
        def held_products(**context):
            # each product is gated on its own: the passing ones are published, then the run
            # fails here naming each held product, its expectations and sample values
            return transform.raise_if_held(Lake.default(), _run_id(context))

        published = (dbt_build_standardized() >> gate_standardized() >> dbt_build_shared() >> gate_shared()
                     >> publish())
        published >> dbt_docs()
        published >> held_products()
    return dag
