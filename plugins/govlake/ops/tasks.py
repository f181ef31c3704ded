"""The ``department_connectivity`` product and the ``ops_monitor`` DAG's task bodies.

The three tasks of one DAG run share one instant: ``build_connectivity`` takes ``now`` from the
clock (``now_from_context``: ``$GOVLAKE_NOW`` or the wall clock — never the logical date) and
passes it on in its summary; ``publish_connectivity`` and ``evaluate_alerts`` use that.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from govlake import audit, gate, publish
from govlake.ledger import Delivery, Ledger
from govlake.clock import _iso, now as clock_now, parse_ts
from govlake.ops.freshness import compute
from govlake.ops.gate_history import record_gate_results
from govlake.ops.lineage import PRODUCT
from govlake.storage import Lake

PARQUET_NAME = f"{PRODUCT}.parquet"


CONNECTIVITY_SCHEMA = pa.schema([
    ("dept", pa.string()),
    ("department", pa.string()),
    ("dataset", pa.string()),
    ("title", pa.string()),
    ("update_cycle", pa.string()),
    ("late_after_hours", pa.int64()),
    ("state", pa.string()),
    ("state_label", pa.string()),
    ("reason", pa.string()),
    ("last_delivery_date", pa.string()),
    ("last_ingested_at", pa.timestamp("us", tz="UTC")),
    ("last_batch_id", pa.string()),
    ("last_delivery_status", pa.string()),
    ("hours_since_delivery", pa.float64()),
    ("deliveries", pa.int64()),
    ("quarantined_files", pa.int64()),
    ("last_publish_product", pa.string()),
    ("last_publish_version", pa.int64()),
    ("last_published_at", pa.timestamp("us", tz="UTC")),
    ("quarantine_run_id", pa.string()),
    ("quarantined_rows", pa.int64()),
    ("quarantined_by_rule", pa.string()),  # JSON object {rule: rows} of the latest run
    ("quarantine_trend", pa.string()),  # JSON list [{run_id, run_at, rows}] over the last runs
    ("quarantine_rate", pa.float64()),
    ("gate_runs", pa.int64()),
    ("gate_pass_rate", pa.float64()),
    ("dept_on_time", pa.bool_()),
    ("connectivity_rate", pa.float64()),
    ("on_time_departments", pa.int64()),
    ("registered_departments", pa.int64()),
    ("computed_at", pa.timestamp("us", tz="UTC")),
])


def connectivity_table(lake: Lake, now: dt.datetime | str | None = None, **kwargs) -> pa.Table:
    """One row per registered department × dataset (ASCII column names; see CONNECTIVITY_SCHEMA)."""
    c = compute(lake, now, **kwargs)
    on_time = {d.dept: d.on_time for d in c.departments}
    rows = []
    for f in c.feeds:
        rows.append({
            "dept": f.dept, "department": f.department, "dataset": f.dataset, "title": f.title,
            "update_cycle": f.update_cycle, "late_after_hours": f.late_after_hours,
            "state": f.state, "state_label": f.state_label, "reason": f.reason,
            "last_delivery_date": f.last_delivery_date, "last_ingested_at": f.last_ingested_at,
            "last_batch_id": f.last_batch_id, "last_delivery_status": f.last_delivery_status,
            "hours_since_delivery": f.hours_since_delivery, "deliveries": f.deliveries,
            "quarantined_files": f.quarantined_files,
            "last_publish_product": f.last_publish_product, "last_publish_version": f.last_publish_version,
            "last_published_at": f.last_published_at,
            "quarantine_run_id": f.quarantine_run_id, "quarantined_rows": f.quarantined_rows,
            "quarantined_by_rule": json.dumps(f.quarantined_by_rule, ensure_ascii=False, sort_keys=True),
            "quarantine_trend": json.dumps(f.quarantine_trend, ensure_ascii=False),
            "quarantine_rate": f.quarantine_rate, "gate_runs": f.gate_runs, "gate_pass_rate": f.gate_pass_rate,
            "dept_on_time": on_time[f.dept], "connectivity_rate": c.rate,
            "on_time_departments": c.on_time_departments, "registered_departments": c.registered_departments,
            "computed_at": c.now,
        })
    return pa.Table.from_pylist(rows, schema=CONNECTIVITY_SCHEMA)


def build_connectivity_parquet(lake: Lake, out_path: Path | str, now: dt.datetime | str | None = None,
                               **kwargs) -> Path:
    """Write ``department_connectivity`` to ``out_path`` atomically (tmp + fsync + rename)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = connectivity_table(lake, now, **kwargs)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return out


def candidate_path(lake: Lake, run_id: str) -> Path:
    """Where the ops DAG writes the candidate: ``candidate/<run_id>/department_connectivity.parquet``."""
    return lake.candidate(run_id) / PARQUET_NAME


# ---- the ops_monitor DAG's task bodies ---------------------------------------------------------
def now_from_context(context: dict | None = None) -> dt.datetime:
    """The clock of an ops run: ``clock.now()`` — the wall clock, or ``$GOVLAKE_NOW``. Not the
    run's logical date (a scheduler run's is an hour behind, a demo's may be days off), so the
    DAG and ``govlake status`` measure freshness at the same time. ``context`` is accepted for
    the DAG's call and ignored."""
    return clock_now()


def build_connectivity_task(lake: Lake, run_id: str, now: dt.datetime | str | None = None) -> dict:
    """Write the ``department_connectivity`` candidate for ``run_id``; returns a JSON-able summary."""
    c_now = clock_now(now)
    out = build_connectivity_parquet(lake, candidate_path(lake, run_id), c_now)
    table = pq.read_table(out, columns=["dept", "state", "connectivity_rate", "on_time_departments",
                                        "registered_departments"])
    states: dict[str, int] = {}
    for s in table.column("state").to_pylist():
        states[s] = states.get(s, 0) + 1
    rate = table.column("connectivity_rate")[0].as_py() if table.num_rows else 0.0
    return {"run_id": run_id, "now": _iso(c_now), "candidate": str(out), "rows": table.num_rows,
            "states": states, "connectivity_rate": rate,
            "on_time_departments": table.column("on_time_departments")[0].as_py() if table.num_rows else 0,
            "registered_departments": table.column("registered_departments")[0].as_py() if table.num_rows else 0}


def connectivity_inputs(lake: Lake, now: dt.datetime | str | None = None) -> list[dict]:
    """The deliveries the product describes (newest live batch per feed), for the manifest's lineage."""
    now = clock_now(now)
    newest: dict[str, Delivery] = {}
    for d in Ledger(lake).all():
        at = parse_ts(d.ingested_at)
        if d.status != "ingested" or d.superseded_by or (at and at > now):
            continue
        key = f"{d.dept}.{d.dataset}"
        if key not in newest or at >= parse_ts(newest[key].ingested_at):
            newest[key] = d
    return [{"dept": d.dept, "dataset": d.dataset, "batch_id": d.batch_id, "delivery_date": d.delivery_date,
             "file": d.file_name, "sha256": d.sha256} for _, d in sorted(newest.items())]


def publish_connectivity_task(lake: Lake, run_id: str, candidate: Path | str,
                              now: dt.datetime | str | None = None, *, dag_id: str = "ops_monitor",
                              task_id: str = "publish_connectivity") -> dict:
    """Gate the candidate with ``expectations/shared/department_connectivity.json``, record the
    verdict in the gate history, publish it (``govlake.publish.gate_and_publish``) and append
    the publication to the audit log (the DAG task then rebuilds the catalog site,
    ``govlake.site.build_site``). A failed gate is recorded, then ``GateFailed`` is raised."""
    now = clock_now(now)
    candidate = Path(candidate)
    g = gate.validate(lake, "shared", {PRODUCT: candidate}, run_id, today=now.date())
    record_gate_results(lake, g, ts=now, dag_id=dag_id, task_id=task_id)
    pub = publish.gate_and_publish(lake, PRODUCT, candidate, run_id=run_id,
                                   inputs=connectivity_inputs(lake, now), gate_result=g)
    audit.record_publication(lake, pub.record)
    return {"product": PRODUCT, "version": int(pub), "path": pub.record["path"],
            "row_count": pub.record["row_count"], "report": str(g.report_path)}
