"""Freshness, feed state, 互联互通率 and the department_connectivity table, with controlled clocks.

Ledgers are built with the real ``Ledger.record``; the registered datasets are the project's
six departments (all daily except tax, weekly)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from ops_support import all_on_time, deliver, qrow, write_quarantine

from govlake import cli, gate, metadata, ops
from govlake.ledger import Ledger

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def feed(c, dept):
    return next(f for f in c.feeds if f.dept == dept)


def test_mixed_states_and_connectivity_rate(lake):
    ps = deliver(lake, "public_security", "household_registration", "2026-11-24", "2026-11-25T01:00:00Z")
    # civil affairs: last data is from 11-22 → 11-23 00:00 + 36 h = 11-24 12:00 < now → late
    deliver(lake, "civil_affairs", "marriage_registration", "2026-11-22", "2026-11-23T03:00:00Z")
    # health: good delivery, then a newer file quarantined → failing
    deliver(lake, "health", "birth_certificate", "2026-11-23", "2026-11-24T01:00:00Z")
    deliver(lake, "health", "birth_certificate", "2026-11-24", "2026-11-25T01:00:00Z", status="quarantined",
            reason="undecodable", message="byte 0xff at offset 12\nnot gb18030")
    # human_resources: on time; market_regulation: never delivered
    deliver(lake, "human_resources", "social_insurance", "2026-11-24", "2026-11-25T01:30:00Z")
    # tax is weekly (8 days): data of 11-18 → 11-19 00:00 + 192 h = 11-27 → on time
    deliver(lake, "tax", "taxpayer_registration", "2026-11-18", "2026-11-19T05:00:00Z")

    c = ops.compute(lake, NOW)
    states = {f.dept: f.state for f in c.feeds}
    assert states == {"public_security": "on_time", "civil_affairs": "late", "health": "failing",
                      "human_resources": "on_time", "market_regulation": "never_delivered", "tax": "on_time"}
    assert c.registered_departments == 6 and c.on_time_departments == 3
    assert c.rate == pytest.approx(0.5)
    assert not c.healthy

    p = feed(c, "public_security")
    assert p.last_delivery_date == "2026-11-24" and p.last_batch_id == ps.batch_id
    assert p.last_ingested_at == dt.datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert p.hours_since_delivery == pytest.approx(12.0)  # measured from the end of the delivery day
    late = feed(c, "civil_affairs")
    assert late.hours_since_delivery == pytest.approx(60.0) and "36 h" in late.reason
    h = feed(c, "health")
    assert h.failing_cause == "quarantined_delivery" and "undecodable" in h.reason and "\n" not in h.reason
    assert h.last_delivery_date == "2026-11-23"  # the newest good data, not the quarantined file
    assert feed(c, "market_regulation").last_delivery_date is None


def test_clock_moves_feeds_from_on_time_to_late(lake):
    deliver(lake, "public_security", "household_registration", "2026-11-24", "2026-11-25T01:00:00Z")
    allowance_end = dt.datetime(2026, 11, 25, tzinfo=UTC) + dt.timedelta(hours=36)
    assert feed(ops.compute(lake, allowance_end), "public_security").state == "on_time"
    assert feed(ops.compute(lake, allowance_end + dt.timedelta(minutes=1)), "public_security").state == "late"
    # a delivery ingested after "now" does not exist yet (as-of)
    assert feed(ops.compute(lake, "2026-11-25T00:30:00Z"), "public_security").state == "never_delivered"


def test_early_delivery_is_measured_from_its_arrival(lake):
    # a file dated far in the future does not keep the feed fresh until then
    deliver(lake, "public_security", "household_registration", "2026-12-31", "2026-11-20T00:00:00Z")
    f = feed(ops.compute(lake, NOW), "public_security")
    assert f.state == "late" and f.hours_since_delivery == pytest.approx(5 * 24 + 12)


def test_all_on_time_is_100_percent(lake):
    all_on_time(lake)
    c = ops.compute(lake, NOW)
    assert c.rate == 1.0 and c.healthy
    assert {d.state for d in c.departments} == {"on_time"}


def test_quarantined_then_good_delivery_recovers(lake):
    all_on_time(lake)
    deliver(lake, "tax", "taxpayer_registration", "2026-11-25", "2026-11-25T08:00:00Z", status="quarantined",
            reason="contract", message="missing column 纳税人识别号")
    assert feed(ops.compute(lake, NOW), "tax").state == "failing"
    deliver(lake, "tax", "taxpayer_registration", "2026-11-25", "2026-11-25T09:00:00Z", name="fixed.csv")
    assert feed(ops.compute(lake, NOW), "tax").state == "on_time"


def test_failed_staging_gate_makes_feed_failing_and_pass_rate(lake):
    all_on_time(lake)
    for i, ok in enumerate([True, True, False]):
        ops.record_gate_result(lake, run_id=f"r{i}", layer="standardized", model="stg_tax__taxpayer_registration",
                               suite="standardized.stg_tax__taxpayer_registration", success=ok,
                               failed=[] if ok else ["expect_column_values_to_not_be_null(uscc): 3 unexpected"],
                               ts=f"2026-11-25T0{i + 1}:00:00Z")
    ops.record_gate_result(lake, run_id="r2", layer="shared", model="population_base", suite="shared.population_base",
                           success=True, failed=[], ts="2026-11-25T03:00:00Z")
    c = ops.compute(lake, NOW)
    tax = feed(c, "tax")
    assert tax.state == "failing" and tax.failing_cause == "gate_failed"
    assert "stg_tax__taxpayer_registration" in tax.reason and "uscc" in tax.reason
    assert tax.gate_runs == 3 and tax.gate_pass_rate == pytest.approx(2 / 3)
    assert feed(c, "health").gate_pass_rate is None
    assert c.rate == pytest.approx(5 / 6)
    assert [(g.layer, g.model) for g in c.failing_gates] == [("standardized", "stg_tax__taxpayer_registration")]
    assert c.last_failed_gate.run_id == "r2"
    # a gate recorded after "now" is not seen; a later pass resolves it
    assert feed(ops.compute(lake, "2026-11-25T02:30:00Z"), "tax").state == "on_time"
    ops.record_gate_result(lake, run_id="r3", layer="standardized", model="stg_tax__taxpayer_registration",
                           suite="s", success=True, failed=[], ts="2026-11-25T04:00:00Z")
    c = ops.compute(lake, NOW)
    assert feed(c, "tax").state == "on_time" and not c.failing_gates and c.healthy
    assert c.last_failed_gate.run_id == "r2"  # still reported as the most recent failure


def test_gate_history_is_jsonl_and_corruption_names_the_line(lake):
    ops.record_gate_result(lake, run_id="a", layer="shared", model="m", suite="s", success=False,
                           failed=["x failed", "y failed"], ts="2026-11-25T00:00:00Z")
    lines = ops.gate_history_path(lake).read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["failed"] == ["x failed", "y failed"]
    assert ops.gate_history(lake)[0].reason == "x failed (+1 more)"
    with open(ops.gate_history_path(lake), "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    with pytest.raises(ValueError, match=r"gate_history.jsonl line 2"):
        ops.gate_history(lake)


def test_quarantine_by_rule_trend_and_rate(lake):
    all_on_time(lake)
    batch = next(d for d in Ledger(lake).all("public_security")).batch_id
    # run 1: 2 rows; run 2 (latest): rows 1..10 bad, row 3 fails two rules
    write_quarantine(lake, "run1", [qrow("public_security", "household_registration", batch, n) for n in (1, 2)],
                     mtime="2026-11-25T03:00:00Z")
    rows = [qrow("public_security", "household_registration", batch, n) for n in range(1, 11)]
    rows.append(qrow("public_security", "household_registration", batch, 3, rule="gender_code", column="性别"))
    rows.append(qrow("health", "birth_certificate", "other-batch", 1, rule="date"))
    write_quarantine(lake, "run2", rows, mtime="2026-11-25T04:00:00Z")
    c = ops.compute(lake, NOW)
    ps = feed(c, "public_security")
    assert ps.quarantine_run_id == "run2"
    assert ps.quarantined_rows == 10  # distinct rows
    assert ps.quarantined_by_rule == {"gender_code": 1, "id_number_checksum": 10}
    assert [t["rows"] for t in ps.quarantine_trend] == [2, 10]
    assert ps.quarantine_rate == pytest.approx(10 / 100)  # newest batch has 100 rows
    # health's rows are from a batch that is not its newest: its newest batch has no quarantined row
    assert feed(c, "health").quarantine_rate == 0
    assert feed(c, "tax").quarantined_rows == 0
    # runs after "now" are ignored; a batch newer than the run has no rate yet
    c_early = ops.compute(lake, "2026-11-25T03:30:00Z")
    assert feed(c_early, "public_security").quarantine_run_id == "run1"
    hist = ops.quarantine_history(lake, now=NOW)
    assert {(h["run_id"], h["dataset"], h["rule"], h["rows"]) for h in hist} >= {
        ("run1", "household_registration", "id_number_checksum", 2),
        ("run2", "household_registration", "gender_code", 1),
        ("run2", "birth_certificate", "date", 1)}


def _publish(lake, product, version, created_at, feeds):
    """A published version whose manifest lists ``feeds`` (dept.dataset) as its inputs."""
    vd = lake.version_dir(product, version)
    vd.mkdir(parents=True)
    inputs = [{"dept": f.split(".")[0], "dataset": f.split(".")[1], "batch_id": f"b-{f}"} for f in feeds]
    (vd / "_manifest.json").write_text(json.dumps({"product": product, "version": version, "run_id": "r",
                                                   "created_at": created_at, "inputs": inputs}), encoding="utf-8")
    lake.switch_current(product, version)


POPULATION_FEEDS = ["public_security.household_registration", "civil_affairs.marriage_registration",
                    "health.birth_certificate", "human_resources.social_insurance", "tax.taxpayer_registration"]


def test_last_publish_follows_lineage_of_the_manifests(lake):
    all_on_time(lake)
    _publish(lake, "legal_entity_base", 1, "2026-11-25T07:00:00Z",
             ["market_regulation.enterprise_registration", "tax.taxpayer_registration"])
    _publish(lake, "population_base", 1, "2026-11-25T04:00:00Z", POPULATION_FEEDS)
    _publish(lake, "population_base", 2, "2026-11-25T06:00:00Z", POPULATION_FEEDS)
    _publish(lake, "population_base", 3, "2026-11-26T06:00:00Z", POPULATION_FEEDS)  # after now: not yet
    c = ops.compute(lake, NOW)
    tax = feed(c, "tax")  # in population_base (06:00) and legal_entity_base (07:00): the latest
    assert (tax.last_publish_product, tax.last_publish_version) == ("legal_entity_base", 1)
    ps = feed(c, "public_security")
    assert (ps.last_publish_product, ps.last_publish_version) == ("population_base", 2)
    assert ps.last_published_at == dt.datetime(2026, 11, 25, 6, tzinfo=UTC)
    # health and human resources feed population_base through a Jinja loop of ref()s: the
    # manifest's inputs say so, whatever the SQL looks like
    for dept in ("health", "human_resources"):
        assert (feed(c, dept).last_publish_product, feed(c, dept).last_publish_version) == ("population_base", 2)
    assert {d.dept: d.last_publish[0] for d in c.departments if d.last_publish} == {
        "public_security": "population_base", "civil_affairs": "population_base", "health": "population_base",
        "human_resources": "population_base", "tax": "legal_entity_base", "market_regulation": "legal_entity_base"}
    pubs = ops.publishes(lake, NOW)
    assert ops.product_lineage(lake, pubs)["population_base"] == set(POPULATION_FEEDS)


def test_lineage_uses_the_published_versions_manifest(lake):
    """A version that stopped reading a feed no longer counts as that feed's last publish, and
    department_connectivity (which describes the ledger, not the feeds' data) is nobody's."""
    all_on_time(lake)
    _publish(lake, "population_base", 1, "2026-11-25T04:00:00Z", POPULATION_FEEDS)
    _publish(lake, "population_base", 2, "2026-11-25T06:00:00Z", ["public_security.household_registration"])
    _publish(lake, ops.PRODUCT, 1, "2026-11-25T08:00:00Z", [ds.id for ds in metadata.datasets()])
    c = ops.compute(lake, NOW)
    assert (feed(c, "public_security").last_publish_product, feed(c, "public_security").last_publish_version) == (
        "population_base", 2)
    assert feed(c, "health").last_publish_product is None
    assert feed(c, "market_regulation").last_publish_product is None
    assert not hasattr(ops, "_REF_RE") and not hasattr(ops, "_models_sql")  # no SQL scanning


def test_quarantine_figures_follow_the_feeds_latest_batch(lake):
    """Incremental transform runs (docs/adr/0008) only standardize new batches: a run without a
    new batch of a feed has no rows for it, which must not reset the feed's quarantine rate."""
    all_on_time(lake)
    batch = next(d for d in Ledger(lake).all("public_security")).batch_id
    rows = [qrow("public_security", "household_registration", batch, n) for n in range(1, 13)]
    rows.append(qrow("public_security", "household_registration", batch, 1, rule="gender_code", column="性别"))
    write_quarantine(lake, "run1", rows, mtime="2026-11-25T03:00:00Z")
    # two later runs standardized other feeds' new batches only
    tax = next(d for d in Ledger(lake).all("tax")).batch_id
    write_quarantine(lake, "run2", [qrow("tax", "taxpayer_registration", tax, 1, rule="uscc")],
                     mtime="2026-11-25T04:00:00Z")
    write_quarantine(lake, "run3", [], mtime="2026-11-25T05:00:00Z")
    c = ops.compute(lake, NOW)
    ps = feed(c, "public_security")
    assert ps.quarantine_rate == pytest.approx(12 / 100)
    assert ps.quarantine_run_id == "run1" and ps.quarantine_batch_id == batch
    assert ps.quarantined_rows == 12 and ps.quarantined_by_rule == {"gender_code": 1, "id_number_checksum": 12}
    assert [t["rows"] for t in ps.quarantine_trend] == [12, 0, 0]  # the per-run chart is unchanged
    t = feed(c, "tax")
    assert (t.quarantine_run_id, t.quarantined_rows, t.quarantine_rate) == ("run2", 1, pytest.approx(0.01))
    # a feed whose newest batch was standardized without a bad row: 0, once a run has seen it
    assert feed(c, "health").quarantine_rate == 0 and feed(c, "health").quarantined_rows == 0
    # a new batch not yet standardized by any run: no rate yet (not the old batch's)
    deliver(lake, "public_security", "household_registration", "2026-11-25", "2026-11-25T06:00:00Z")
    ps = feed(ops.compute(lake, NOW), "public_security")
    assert ps.quarantine_rate is None and ps.quarantined_rows == 0 and ps.quarantine_run_id is None


def test_clock_is_the_wall_clock_unless_injected(monkeypatch):
    monkeypatch.delenv(ops.NOW_ENV, raising=False)
    before = dt.datetime.now(UTC)
    got = ops.now()
    assert before <= got <= dt.datetime.now(UTC) and got.tzinfo is not None
    assert ops.now("2026-11-25T20:00:00+08:00") == dt.datetime(2026, 11, 25, 12, tzinfo=UTC)
    monkeypatch.setenv(ops.NOW_ENV, "2026-11-25T12:00:00Z")
    assert ops.now() == NOW and ops.utcnow() == NOW
    assert ops.now("2026-11-26T00:00:00Z") == dt.datetime(2026, 11, 26, tzinfo=UTC)  # explicit wins
    monkeypatch.setenv(ops.NOW_ENV, "next tuesday")
    with pytest.raises(ValueError, match=ops.NOW_ENV):
        ops.now()


def test_dag_clock_ignores_the_logical_date(monkeypatch):
    """ops_monitor measures freshness against the wall clock, not the run's logical date (a
    scheduler run's logical date is the start of its interval, an hour behind; a demo's is the
    end of its delivery day)."""
    monkeypatch.delenv(ops.NOW_ENV, raising=False)
    ctx = {"logical_date": dt.datetime(2026, 11, 24, 23, 59, tzinfo=UTC),
           "data_interval_end": dt.datetime(2026, 11, 25, tzinfo=UTC)}
    before = dt.datetime.now(UTC)
    assert before <= ops.now_from_context(ctx) <= dt.datetime.now(UTC)
    monkeypatch.setenv(ops.NOW_ENV, "2026-11-25T12:00:00Z")
    assert ops.now_from_context(ctx) == NOW


def test_status_without_now_uses_the_wall_clock(lake, monkeypatch):
    monkeypatch.delenv(ops.NOW_ENV, raising=False)
    now = dt.datetime.now(UTC)
    today = now.date().isoformat()
    for ds in metadata.datasets():
        deliver(lake, ds.dept, ds.name, today, (now - dt.timedelta(minutes=30)).isoformat())
    res = _status(lake, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["connectivity_rate"] == 1.0
    assert now <= ops.parse_ts(doc["now"]) <= dt.datetime.now(UTC)
    # the injected clock reaches the CLI too: three days later every daily feed is late
    env_now = (now + dt.timedelta(days=3)).isoformat()
    monkeypatch.setenv(ops.NOW_ENV, env_now)
    res = _status(lake, "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["connectivity_rate"] == pytest.approx(1 / 6)


def test_connectivity_table_and_parquet_round_trip(lake, tmp_path):
    deliver(lake, "public_security", "household_registration", "2026-11-24", "2026-11-25T01:00:00Z")
    out = ops.build_connectivity_parquet(lake, tmp_path / "c" / "department_connectivity.parquet", NOW)
    t = pq.read_table(out)
    assert t.num_rows == len(metadata.datasets())
    assert all(n.isascii() for n in t.column_names)
    rows = {r["dept"]: r for r in t.to_pylist()}
    assert rows["public_security"]["state"] == "on_time" and rows["public_security"]["state_label"] == "按时"
    assert rows["public_security"]["department"] == "公安"
    assert rows["tax"]["state"] == "never_delivered" and rows["tax"]["state_label"] == "从未交付"
    assert [r["connectivity_rate"] for r in rows.values()] == [pytest.approx(1 / 6)] * len(rows)
    assert rows["public_security"]["dept_on_time"] is True
    assert json.loads(rows["public_security"]["quarantined_by_rule"]) == {}
    # the reviewed suite names exactly the table's columns
    suite = json.loads(gate.suite_path("shared", ops.PRODUCT).read_text(encoding="utf-8"))
    colset = next(e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set")
    assert colset["kwargs"]["column_set"] == t.column_names


def _status(lake, *args):
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root)}
    return subprocess.run([sys.executable, "-m", "govlake.cli", "status", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_status_cli_exit_codes(lake, capsys):
    all_on_time(lake)
    ok = _status(lake, "--now", "2026-11-25T12:00:00Z")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "互联互通率" in ok.stdout and "100.0%" in ok.stdout
    for name in ("公安", "民政", "卫健", "人社", "市场监管", "税务"):
        assert name in ok.stdout
    # two days later every daily feed is late; only weekly tax is on time
    late = _status(lake, "--now", "2026-11-27T12:00:00Z")
    assert late.returncode == 1
    assert "逾期" in late.stdout and "16.7%" in late.stdout
    # in-process, JSON, with a failed gate reported with its reason
    ops.record_gate_result(lake, run_id="run-9", layer="shared", model="population_base",
                           suite="shared.population_base", success=False,
                           failed=["expect_column_values_to_be_unique(id_number): 2 unexpected"],
                           ts="2026-11-25T06:00:00Z")
    capsys.readouterr()
    assert cli.main(["status", "--now", "2026-11-25T12:00:00Z", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["connectivity_rate"] == 1.0 and doc["exit_code"] == 1
    assert doc["last_failed_gate"]["model"] == "population_base"
    assert cli.main(["status", "--now", "2026-11-25T12:00:00Z"]) == 1
    text = capsys.readouterr().out
    assert "population_base" in text and "id_number" in text
    assert cli.main(["status", "--now", "yesterday"]) == 2
