"""Landing anomalies: extraction never follows a symbolic link (file or folder, at any level, nor a
file swapped for one after listing), and what it refuses -- symlinks, folders of undeclared
departments or datasets, folders not named as a date or dated in the future -- is recorded once
per path, listed in the extraction summary, shown by ``govlake status --json`` and the dashboard,
and raised as alerts; nothing is ingested from it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import duckdb
import pytest

from govlake import alerts, ingest, metadata, ops
from govlake.site import dashboard
from govlake.ledger import Ledger

TAX = metadata.dataset("tax.taxpayer_registration")
DATE = "2026-11-20"
SECRET = "OUTSIDE-SECRET-机密"  # the content of files outside the lake: must never reach the lake


def _csv(ds, marker: str) -> bytes:
    rows = [",".join(ds.column_names), ",".join([marker] + ["x"] * (len(ds.column_names) - 1))]
    return ("\n".join(rows) + "\n").encode("utf-8")


def _deliver(lake, ds, date, name, marker="inside") -> os.PathLike:
    d = lake.landing(ds.dept, ds.name, date)
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(_csv(ds, marker))
    return d / name


@pytest.fixture
def outside(tmp_path):
    """A folder outside the lake holding a perfectly valid delivery (it would be ingested if read)."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "taxpayer_registration_secret.csv").write_bytes(_csv(TAX, SECRET))
    return o


def _raw_values(lake, ds) -> list:
    if not list(lake.raw(ds.dept, ds.name).glob("*/*.parquet")):
        return []
    col = ds.column_names[0]
    return [r[0] for r in duckdb.sql(
        f"select \"{col}\" from read_parquet('{lake.raw_glob(ds.dept, ds.name)}') order by 1").fetchall()]


def _lake_holds_secret(lake) -> list[str]:
    """Every file under the lake whose bytes contain the outside content (raw Parquet is checked
    by value in ``_raw_values``; zstd would hide the bytes)."""
    hits = []
    for p in lake.root.rglob("*"):
        if p.is_file() and not p.is_symlink() and SECRET.encode() in p.read_bytes():
            hits.append(str(p))
    return hits


def _anomaly_rows(lake) -> list[dict]:
    with sqlite3.connect(lake.landing_anomalies_db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("select * from landing_anomalies order by path")]


def _status_json(lake) -> tuple[int, dict]:
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root)}
    env.pop("GOVLAKE_NOW", None)
    r = subprocess.run([sys.executable, "-m", "govlake.cli", "status", "--json"], capture_output=True, text=True,
                       env=env, timeout=120)
    return r.returncode, json.loads(r.stdout)


def _alerts_cfg(lake):
    return {**alerts.DEFAULT_CONFIG, "notifiers": [{"type": "jsonl"}]}


def test_symlinked_file_and_date_folder_pointing_outside_are_refused(lake, outside):
    good = _deliver(lake, TAX, DATE, "taxpayer_registration_20261120.csv", "inside")
    (good.parent / "taxpayer_registration_link.csv").symlink_to(outside / "taxpayer_registration_secret.csv")
    (lake.landing(TAX.dept, TAX.name) / "2026-11-21").symlink_to(outside, target_is_directory=True)

    res = ingest.extract_dataset(TAX, lake)
    s = res.summary()

    # the normal file is ingested as before; nothing of the outside content anywhere in the lake
    assert [f.status for f in res.files] == ["ingested"] and s["rows"] == 1
    assert _raw_values(lake, TAX) == ["inside"]
    assert _lake_holds_secret(lake) == []
    assert all(SECRET not in (d.message or "") for d in Ledger(lake).all())
    assert [d.source_file for d in Ledger(lake).all()] == [f"tax/taxpayer_registration/{DATE}/{good.name}"]

    # reported in the summary (so `govlake run` prints them) ...
    link_file = f"tax/taxpayer_registration/{DATE}/taxpayer_registration_link.csv"
    link_dir = "tax/taxpayer_registration/2026-11-21"
    probs = {p["file"]: p for p in s["problems"]}
    assert set(probs) == {f"landing/{link_file}", f"landing/{link_dir}"}
    assert {p["reason"] for p in probs.values()} == {"landing.symlink"}
    assert str(outside) in probs[f"landing/{link_dir}"]["message"]
    # ... recorded once per path, with a reason.json in the file quarantine (no content copied)
    rows = {r["path"]: r for r in _anomaly_rows(lake)}
    assert set(rows) == {link_file, link_dir}
    assert rows[link_file]["link_target"] == str(outside / "taxpayer_registration_secret.csv")
    for path, r in rows.items():
        qdir = lake.root / r["quarantine_dir"]
        assert sorted(p.name for p in qdir.iterdir()) == ["reason.json"], path
        reason = json.loads((qdir / "reason.json").read_text("utf-8"))
        assert reason["reason"] == "landing.symlink" and reason["source_file"] == path
        assert reason["content_copied"] is False and reason["dept"] == "tax"


def test_symlinked_dataset_and_department_folders_are_refused(lake, outside, tmp_path):
    # landing/tax/taxpayer_registration -> outside tree with a date folder and a valid file
    tree = tmp_path / "outside_tree"
    (tree / DATE).mkdir(parents=True)
    (tree / DATE / "taxpayer_registration_1.csv").write_bytes(_csv(TAX, SECRET))
    (lake.landing_root / TAX.dept).mkdir(parents=True)
    lake.landing(TAX.dept, TAX.name).symlink_to(tree, target_is_directory=True)
    # landing/health -> outside (a declared department's folder)
    health = next(d for d in metadata.datasets() if d.dept == "health")
    dept_tree = tmp_path / "outside_dept"
    (dept_tree / health.name / DATE).mkdir(parents=True)
    (dept_tree / health.name / DATE / "x.csv").write_bytes(_csv(health, SECRET))
    (lake.landing_root / "health").symlink_to(dept_tree, target_is_directory=True)

    s_tax = ingest.extract_dataset(TAX, lake).summary()
    s_health = ingest.extract_dataset(health, lake).summary()
    assert s_tax["files"] == 0 and s_health["files"] == 0
    assert _raw_values(lake, TAX) == [] and _raw_values(lake, health) == []
    assert _lake_holds_secret(lake) == []
    rows = {r["path"]: r["kind"] for r in _anomaly_rows(lake)}
    assert rows == {"tax/taxpayer_registration": "landing.symlink", "health": "landing.symlink"}
    assert "landing/tax/taxpayer_registration" in {p["file"] for p in s_tax["problems"]}


def test_undeclared_non_date_and_future_folders_are_reported_not_ingested(lake):
    _deliver(lake, TAX, DATE, "taxpayer_registration_20261120.csv", "normal")
    _deliver(lake, TAX, "2099-01-01", "taxpayer_registration_20990101.csv", "future")
    _deliver(lake, TAX, "latest", "taxpayer_registration_latest.csv", "not-a-date")
    _deliver(lake, TAX, "20261121", "taxpayer_registration_20261121.csv", "basic-iso")  # not YYYY-MM-DD
    (lake.landing_root / "foreign_bureau" / "ledger" / DATE).mkdir(parents=True)
    (lake.landing_root / "foreign_bureau" / "ledger" / DATE / "a.csv").write_text("a\n1\n")
    (lake.landing(TAX.dept, "unknown_feed", DATE)).mkdir(parents=True)
    (lake.landing(TAX.dept, "unknown_feed", DATE) / "a.csv").write_bytes(_csv(TAX, "undeclared-ds"))

    # every dataset of the platform, as the extraction DAGs run them
    summaries = {ds.id: ingest.extract_dataset(ds, lake, up_to="2026-11-24").summary() for ds in metadata.datasets()}

    assert _raw_values(lake, TAX) == ["normal"]
    assert [d.delivery_date for d in Ledger(lake).all()] == [DATE]
    expected = {
        "tax/taxpayer_registration/2099-01-01": "landing.future_date",
        "tax/taxpayer_registration/latest": "landing.not_a_date",
        "tax/taxpayer_registration/20261121": "landing.not_a_date",
        "foreign_bureau": "landing.undeclared_department",
        "tax/unknown_feed": "landing.undeclared_dataset",
    }
    assert {r["path"]: r["kind"] for r in _anomaly_rows(lake)} == expected
    # each printed once by a run: listed by exactly one dataset's summary
    listed = [p["file"] for s in summaries.values() for p in s["problems"]]
    assert sorted(listed) == sorted(f"landing/{p}" for p in expected)
    assert {p["file"] for p in summaries[TAX.id]["problems"]} >= {
        "landing/tax/taxpayer_registration/2099-01-01", "landing/tax/unknown_feed"}
    # none of them goes to the file quarantine (folders, not files; they stay for the department to fix)
    assert not lake.quarantine_files(TAX.dept, TAX.name).exists()

    # govlake status --json (exit 1: needs attention)
    rc, st = _status_json(lake)
    assert rc == 1
    got = {a["path"]: a for a in st["landing_anomalies"]}
    assert {p: a["kind"] for p, a in got.items()} == expected
    fut = got["tax/taxpayer_registration/2099-01-01"]
    assert "landing/tax/taxpayer_registration/2099-01-01" in fut["message"] and "future" in fut["message"]
    assert fut["delivery_date"] == "2099-01-01" and fut["dept"] == "tax"

    # alerts: one per path, once
    res = alerts.evaluate(lake, cfg=_alerts_cfg(lake))
    keys = {f"landing_anomaly:{p}" for p in expected}
    assert keys <= set(res["open"])
    sent = [a for a in alerts.read_alerts(lake) if a["kind"] == "landing_anomaly"]
    assert sorted(a["key"] for a in sent) == sorted(keys)
    by_key = {a["key"]: a for a in sent}
    assert by_key["landing_anomaly:tax/unknown_feed"]["dag_id"] == "extract_tax"
    assert by_key["landing_anomaly:tax/taxpayer_registration/latest"]["task_id"] == "extract_taxpayer_registration"
    assert by_key["landing_anomaly:foreign_bureau"]["dag_id"] is None

    # the dashboard lists them
    html = dashboard.build(lake).read_text("utf-8")
    for p in expected:
        assert f'data-path="landing/{p}"' in html


def test_recorded_once_per_path_and_resolved_when_fixed(lake):
    _deliver(lake, TAX, "2099-01-01", "taxpayer_registration_20990101.csv", "future")
    (lake.landing_root / "foreign_bureau").mkdir()
    cfg = _alerts_cfg(lake)
    for _ in range(3):
        ingest.extract_dataset(TAX, lake)
        alerts.evaluate(lake, cfg=cfg)
    rows = _anomaly_rows(lake)
    assert [(r["path"], r["times_seen"], r["resolved_at"]) for r in rows] == [
        ("foreign_bureau", 3, None), ("tax/taxpayer_registration/2099-01-01", 3, None)]
    opened = [a for a in alerts.read_alerts(lake) if a["kind"] == "landing_anomaly" and a["event"] == "opened"]
    assert len(opened) == 2  # not one per run

    # the department removes its stray folder and renames the future one: resolved, alert closed
    (lake.landing_root / "foreign_bureau").rmdir()
    os.rename(lake.landing(TAX.dept, TAX.name, "2099-01-01"), lake.landing(TAX.dept, TAX.name, DATE))
    res = ingest.extract_dataset(TAX, lake)
    assert [f.status for f in res.files] == ["ingested"] and res.summary()["problems"] == []
    assert ops.landing_anomalies(lake) == []
    ev = alerts.evaluate(lake, cfg=cfg)
    assert sorted(n["key"] for n in ev["closed"]) == [
        "landing_anomaly:foreign_bureau", "landing_anomaly:tax/taxpayer_registration/2099-01-01"]
    assert ops.compute(lake).landing_anomalies == []


def test_a_file_swapped_for_a_symlink_after_listing_is_refused(lake, outside, monkeypatch):
    f = _deliver(lake, TAX, DATE, "taxpayer_registration_20261120.csv", "inside")
    real = ingest.scan_dataset

    def listed_then_swapped(*a, **k):
        scan = real(*a, **k)
        f.unlink()
        f.symlink_to(outside / "taxpayer_registration_secret.csv")
        return scan

    monkeypatch.setattr(ingest, "scan_dataset", listed_then_swapped)
    res = ingest.extract_dataset(TAX, lake)
    assert res.files == [] and _raw_values(lake, TAX) == [] and Ledger(lake).all() == []
    assert _lake_holds_secret(lake) == []
    [p] = res.summary()["problems"]
    assert p["reason"] == "landing.symlink" and p["file"] == f"landing/tax/taxpayer_registration/{DATE}/{f.name}"
    assert [r["kind"] for r in _anomaly_rows(lake)] == ["landing.symlink"]


def test_a_date_folder_swapped_for_a_symlink_after_listing_is_refused(lake, outside, monkeypatch):
    f = _deliver(lake, TAX, DATE, "taxpayer_registration_20261120.csv", "inside")
    real = ingest.scan_dataset
    (outside / f.name).write_bytes(_csv(TAX, SECRET))

    def listed_then_swapped(*a, **k):
        scan = real(*a, **k)
        moved = f.parent.with_name("moved")
        os.rename(f.parent, moved)
        f.parent.symlink_to(outside, target_is_directory=True)
        return scan

    monkeypatch.setattr(ingest, "scan_dataset", listed_then_swapped)
    res = ingest.extract_dataset(TAX, lake)
    assert res.files == [] and _raw_values(lake, TAX) == []
    assert _lake_holds_secret(lake) == []
    assert [p["reason"] for p in res.summary()["problems"]] == ["landing.symlink"]


def test_a_file_swapped_after_it_was_opened_is_read_as_opened(lake, outside, monkeypatch):
    """Once opened, the file's bytes are read through its descriptor: replacing its path by a
    link (between hashing, decoding, parsing) changes nothing read."""
    f = _deliver(lake, TAX, DATE, "taxpayer_registration_20261120.csv", "inside")
    real = ingest.landing_sha256

    def swapped_then_hashed(*a, **k):
        f.unlink()
        f.symlink_to(outside / "taxpayer_registration_secret.csv")
        return real(*a, **k)

    monkeypatch.setattr(ingest, "landing_sha256", swapped_then_hashed)
    [r] = ingest.extract_dataset(TAX, lake).files
    assert r.status == "ingested" and r.source_file == f"tax/taxpayer_registration/{DATE}/{f.name}"
    assert _raw_values(lake, TAX) == ["inside"]
    assert _lake_holds_secret(lake) == []


def test_a_normal_day_reports_nothing(lake):
    _deliver(lake, TAX, DATE, "taxpayer_registration_20261120.csv", "normal")
    s = ingest.extract_dataset(TAX, lake).summary()
    assert (s["ingested_files"], s["rows"], s["problems"], s["landing_anomalies"]) == (1, 1, [], 0)
    assert ops.landing_anomalies(lake) == []
    assert ops.compute(lake).to_dict()["landing_anomalies"] == []
