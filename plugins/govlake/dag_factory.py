"""Builds Airflow DAGs from the dataset metadata: one extraction DAG per department.

DAG files in ``dags/`` only call these factories; everything a DAG needs to know about a
dataset (schedule from its update cycle, owner, docs) comes from ``govlake.metadata``.
"""

from __future__ import annotations

import datetime as dt

from govlake import metadata

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
# most frequent cycle first: a department DAG runs as often as its most frequent feed
_CYCLE_ORDER = ["hourly", "daily", "weekly", "monthly"]


def raw_asset(ds: metadata.Dataset):
    from airflow.sdk import Asset

    return Asset(uri=ds.asset_uri, name=f"raw__{ds.dept}__{ds.name}", group="raw",
                 extra={"dept": ds.dept, "dataset": ds.name})


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
        default_args={"owner": datasets[0].owner, "retries": 1, "retry_delay": dt.timedelta(minutes=5)},
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
