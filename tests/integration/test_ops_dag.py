"""The ops_monitor DAG through Airflow (dag.test()): connectivity candidate, alerts, the GX
suite on the candidate, and the failure callback wired into a real task failure."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest
from ops_support import all_on_time, deliver

from govlake import alerts, metadata, ops, runner

pytestmark = pytest.mark.integration
UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def ops_dag(airflow_env):
    dag = runner.load_dags()["ops_monitor"]
    for t in dag.tasks:  # a failing task must fail now, not wait for its retry
        t.retries = 0
    return dag


def test_ops_dag_shape(ops_dag):
    assert ops_dag.schedule == "@hourly"
    assert "layer:ops" in ops_dag.tags and "互联互通率" in ops_dag.doc_md
    assert {t.task_id for t in ops_dag.tasks} == {"build_connectivity", "publish_connectivity", "evaluate_alerts"}
    assert all(t.owner == "govlake data platform" for t in ops_dag.tasks)


def test_ops_dag_builds_connectivity_and_alerts(lake, ops_dag):
    for ds in metadata.datasets():
        if ds.dept == "public_security":  # newest data from 11-21: late at noon on the 25th
            deliver(lake, ds.dept, ds.name, "2026-11-21", "2026-11-22T01:00:00Z")
        else:
            deliver(lake, ds.dept, ds.name, "2026-11-24", "2026-11-25T02:00:00Z")

    logical = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    res = runner.run_dag(ops_dag, logical)
    assert res["state"] == "success", res
    summary = res["summaries"]["build_connectivity"]
    out = ops.candidate_path(lake, res["run_id"])
    assert summary["candidate"] == str(out) and out.is_file()
    t = pq.read_table(out).to_pylist()
    assert len(t) == len(metadata.datasets())
    states = {r["dept"]: r["state"] for r in t}
    assert states["public_security"] == "late"
    assert {s for d, s in states.items() if d != "public_security"} == {"on_time"}
    assert t[0]["connectivity_rate"] == pytest.approx(5 / 6)
    assert t[0]["computed_at"] == logical  # the DAG's clock is its logical date

    assert res["summaries"]["evaluate_alerts"]["opened"] == ["late_feed:public_security.household_registration"]
    sent = alerts.read_alerts(lake)
    assert [a["key"] for a in sent] == ["late_feed:public_security.household_registration"]

    # gated with the reviewed suite (real GX), published, audited, and the verdict recorded
    pub = res["summaries"]["publish_connectivity"]
    assert pub["version"] == 1 and lake.current_version(ops.PRODUCT) == 1
    man = lake.manifest(ops.PRODUCT)
    assert man["run_id"] == res["run_id"] and man["row_count"] == len(t) and man["gate"]["success"]
    assert {i["dataset"] for i in man["inputs"]} == {d.name for d in metadata.datasets()}
    published = pq.read_table(lake.current_dir(ops.PRODUCT) / f"{ops.PRODUCT}.parquet")
    assert published.column("state").to_pylist() == [r["state"] for r in t]
    from govlake import audit

    assert audit.verify(lake).ok
    assert [e["payload"]["version"] for e in audit.entries(lake)
            if e["kind"] == "publication" and e["payload"]["product"] == ops.PRODUCT] == [1]
    assert [(g.model, g.success) for g in ops.gate_history(lake)] == [(ops.PRODUCT, True)]

    # the same hour again: a new version, nothing new is sent
    res2 = runner.run_dag(ops_dag, logical + dt.timedelta(hours=1))
    assert res2["state"] == "success"
    assert lake.current_version(ops.PRODUCT) == 2
    assert res2["summaries"]["evaluate_alerts"]["opened"] == []
    assert len(alerts.read_alerts(lake)) == 1
    # department_connectivity is built from no feed: it is nobody's "last publish"
    assert ops.compute(lake, logical + dt.timedelta(hours=2)).feeds[0].last_publish_product is None


def test_task_failure_raises_alert_through_airflow_callback(lake, ops_dag):
    all_on_time(lake)
    ops.gate_history_path(lake).write_text("{broken\n", encoding="utf-8")
    res = runner.run_dag(ops_dag, dt.datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
    assert res["tasks"]["build_connectivity"] == "failed"
    sent = {a["key"]: a for a in alerts.read_alerts(lake)}
    a = sent["task_failed:ops_monitor.build_connectivity"]
    assert a["dag_id"] == "ops_monitor" and a["task_id"] == "build_connectivity"
    assert "gate_history.jsonl line 1" in a["reason"]
    # repaired: the next successful run closes the task problem (on_success_callback)
    ops.gate_history_path(lake).unlink()
    res = runner.run_dag(ops_dag, dt.datetime(2026, 11, 25, 16, 0, tzinfo=UTC))
    assert res["tasks"]["build_connectivity"] == "success"
    resolved = [a["key"] for a in alerts.read_alerts(lake) if a["event"] == "resolved"]
    assert "task_failed:ops_monitor.build_connectivity" in resolved
