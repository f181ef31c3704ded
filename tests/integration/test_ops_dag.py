"""The ops_monitor DAG through Airflow (dag.test()): connectivity candidate, alerts, the GX
suite on the candidate, and the failure callback wired into a real task failure."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from ops_support import all_on_time, deliver

from govlake import alerts, metadata, ops, runner
from govlake.site import dashboard

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


def _status_json(lake) -> tuple[int, dict]:
    """``govlake status --json`` in a fresh process (no --now: the CLI's own clock)."""
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root)}
    res = subprocess.run([sys.executable, "-m", "govlake.cli", "status", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode in (0, 1), res.stdout + res.stderr
    return res.returncode, json.loads(res.stdout)


def assert_ops_views_agree(lake, published_rows: list[dict]) -> dict:
    """The published department_connectivity, ``govlake status``, the dashboard and the open
    alerts tell the same story: same states, same 互联互通率."""
    states = {(r["dept"], r["dataset"]): r["state"] for r in published_rows}
    rate = published_rows[0]["connectivity_rate"]
    rc, doc = _status_json(lake)
    assert {(f["dept"], f["dataset"]): f["state"] for d in doc["departments"] for f in d["feeds"]} == states
    assert doc["connectivity_rate"] == pytest.approx(rate)
    assert rc == (0 if set(states.values()) == {"on_time"} and not doc["failing_gates"] else 1)
    data = dashboard.collect(lake)
    assert {(f["department"], f["dataset"]): f["state"] for f in data["feeds"]} == {
        (r["department"], r["dataset"]): r["state"] for r in published_rows}
    assert data["rate_text"] == f"{rate:.1%}"
    late = {f"late_feed:{d}.{n}" for (d, n), st in states.items() if st in ("late", "never_delivered")}
    open_late = {p["key"] for p in alerts.Registry(lake).problems("open") if p["kind"] == "late_feed"}
    assert open_late == late
    return doc


def test_ops_dag_measures_freshness_against_the_wall_clock(lake, ops_dag, monkeypatch):
    """Today's deliveries, a run whose logical date is days old (a demo dated in the past, a
    scheduler run's interval start): every feed is on time — the truth on the wall clock — and
    the product, `govlake status`, the dashboard and the alerts agree."""
    monkeypatch.delenv(ops.NOW_ENV, raising=False)
    wall = dt.datetime.now(UTC)
    for ds in metadata.datasets():
        deliver(lake, ds.dept, ds.name, wall.date().isoformat(), (wall - dt.timedelta(minutes=20)).isoformat())
    res = runner.run_dag(ops_dag, wall - dt.timedelta(days=6))
    after = dt.datetime.now(UTC)
    assert res["state"] == "success", res
    rows = pq.read_table(lake.current_dir(ops.PRODUCT) / f"{ops.PRODUCT}.parquet").to_pylist()
    assert {r["state"] for r in rows} == {"on_time"}, [(r["dept"], r["state"], r["reason"]) for r in rows]
    assert rows[0]["connectivity_rate"] == 1.0 and rows[0]["on_time_departments"] == 6
    assert wall <= rows[0]["computed_at"] <= after
    assert res["summaries"]["evaluate_alerts"]["opened"] == [] and alerts.read_alerts(lake) == []
    doc = assert_ops_views_agree(lake, rows)
    assert doc["healthy"] is True


def test_ops_dag_builds_connectivity_and_alerts(lake, ops_dag, monkeypatch):
    for ds in metadata.datasets():
        if ds.dept == "public_security":  # newest data from 11-21: late at noon on the 25th
            deliver(lake, ds.dept, ds.name, "2026-11-21", "2026-11-22T01:00:00Z")
        else:
            deliver(lake, ds.dept, ds.name, "2026-11-24", "2026-11-25T02:00:00Z")

    now = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    monkeypatch.setenv(ops.NOW_ENV, now.isoformat())  # the injected clock; the logical date is not it
    res = runner.run_dag(ops_dag, dt.datetime(2026, 11, 20, 0, 0, tzinfo=UTC))
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
    assert t[0]["computed_at"] == now  # the DAG's clock is the (injected) wall clock

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
    assert_ops_views_agree(lake, published.to_pylist())

    # the same hour again: a new version, nothing new is sent
    monkeypatch.setenv(ops.NOW_ENV, (now + dt.timedelta(hours=1)).isoformat())
    res2 = runner.run_dag(ops_dag, dt.datetime(2026, 11, 20, 1, 0, tzinfo=UTC))
    assert res2["state"] == "success"
    assert lake.current_version(ops.PRODUCT) == 2
    assert res2["summaries"]["evaluate_alerts"]["opened"] == []
    assert len(alerts.read_alerts(lake)) == 1
    # department_connectivity is built from no feed: it is nobody's "last publish"
    assert ops.compute(lake, now + dt.timedelta(hours=2)).feeds[0].last_publish_product is None


def test_task_failure_raises_alert_through_airflow_callback(lake, ops_dag, monkeypatch):
    monkeypatch.setenv(ops.NOW_ENV, "2026-11-25T15:00:00+00:00")
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
