"""A day on which nothing is delivered skips what cannot change (performance step 2, issue 16).

Day 1 builds and publishes every product from a small generated lake. Then a day with no new
delivery runs the same stages: the standardized build runs no dbt (every ingested batch passed
the standardized gate and the dbt project is the one of day 1), the standardized gate runs no
suite, the shared build runs as usual, and the shared gate runs no GX suite (each product's
candidate has the bytes and inputs of its current version, whose verdict stands: carried into
the run's result and recorded in the gate history as skipped). Every product is reported
unchanged, no version is added. A later quiet day with one product's suite changed (an
overrides file) runs that suite again and only that one. A next day with a delivery then
standardizes, builds and validates again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from govlake import config, ingest, metadata, transform
from govlake.storage import Lake
from govlake_synth import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import changeset  # noqa: E402

pytestmark = pytest.mark.integration
DAY1, DAY2 = "2026-11-20", "2026-11-21"


def _run(lake: Lake, run_id: str) -> dict:
    for ds in metadata.datasets():
        ingest.extract_dataset(ds, lake)
    std = transform.build_standardized(lake, run_id)
    std_gate = transform.gate_standardized(lake, run_id)
    shared = transform.build_shared(lake, run_id)
    shared_gate = transform.gate_shared(lake, run_id)
    return {"std": std, "std_gate": std_gate, "shared": shared, "shared_gate": shared_gate,
            "published": transform.publish_layer(lake, run_id)}


def _history(lake: Lake, run_id: str) -> list[dict]:
    lines = lake.gate_history.read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["run_id"] == run_id]


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    base = tmp_path_factory.mktemp("quiet")
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    lake = Lake(base / "lake").ensure()
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake.root)
    try:
        generate.generate(lake, people=200, date=DAY1, seed=11, progress=False)
        day1 = _run(lake, "day1")
        versions = {p: lake.current_version(p) for p in transform.shared_products()}
        quiet1 = _run(lake, "quiet1")
        yield lake, base, day1, versions, quiet1
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old


def test_day1_runs_every_suite(quiet):
    lake, _, day1, _, _ = quiet
    assert "skipped" not in day1["std"]
    assert day1["std_gate"].suite_results, "day 1 validated no standardized model"
    assert set(day1["shared_gate"].suite_results) == set(transform.shared_products())
    assert not any(sr.skipped for sr in day1["shared_gate"].suite_results.values())
    assert all(r["skipped"] is None for r in _history(lake, "day1"))


def test_quiet_day_runs_no_standardized_dbt_and_no_standardized_suite(quiet):
    lake, _, _, _, q = quiet
    assert "every ingested batch passed the standardized gate" in q["std"]["skipped"]
    assert "run day1" in q["std"]["skipped"]
    # no dbt invocation wrote the layer: no stg_ file, no quarantine file for this run
    assert not list((lake.candidate("quiet1") / "standardized").glob("*.parquet"))
    assert not lake.quarantine_rows_run("quiet1").exists()
    assert all(c["raw_rows"] == 0 and c["standardized"] == 0 for c in q["std"]["counts"])
    assert q["std_gate"].success and q["std_gate"].suite_results == {}
    assert not [r for r in _history(lake, "quiet1") if r["layer"] == "standardized"]


def test_quiet_day_runs_no_shared_suite_and_publishes_nothing_new(quiet):
    lake, _, _, versions, q = quiet
    g = q["shared_gate"]
    products = transform.shared_products()
    assert list(g.suite_results) == products
    for p, sr in g.suite_results.items():
        assert sr.success and sr.skipped, p
        assert f"same bytes and inputs as v{versions[p]}" in sr.skipped and "run day1" in sr.skipped
    # GX did not run: no Data Docs for this run; the summary report says why each was not run
    assert not (lake.report_dir("quiet1", "shared") / "data_docs").exists()
    assert "not run: unchanged" in g.report_path.read_text(encoding="utf-8")
    saved = json.loads(g.json_path.read_text(encoding="utf-8"))
    assert all(s["skipped"] for s in saved["suites"].values())
    hist = [r for r in _history(lake, "quiet1") if r["layer"] == "shared"]
    assert sorted(r["model"] for r in hist) == products
    assert all(r["success"] and r["skipped"].startswith("unchanged") for r in hist)
    # no shared dbt build: day 1's files, linked, are this run's candidates; each reported unchanged
    assert q["shared"]["reused_from"] == "day1" and "run day1" in q["shared"]["skipped"]
    for p in products:
        mine, day1 = (lake.candidate(r) / "shared" / f"{p}.parquet" for r in ("quiet1", "day1"))
        assert mine.read_bytes() == day1.read_bytes(), p
    assert all(p.get("unchanged") for p in q["published"]), q["published"]
    assert {p: lake.current_version(p) for p in products} == versions


def test_a_changed_suite_runs_again(quiet, monkeypatch):
    lake, base, _, versions, _ = quiet
    products = transform.shared_products()
    target = "population_base" if "population_base" in products else products[0]
    exp = base / "expectations"
    shutil.copytree(config.expectations_dir(), exp)
    (exp / "shared" / "overrides").mkdir(exist_ok=True)
    (exp / "shared" / "overrides" / f"{target}.json").write_text(json.dumps(
        {"expectations": [{"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}}]}),
        encoding="utf-8")
    monkeypatch.setattr(config, "expectations_dir", lambda: exp)
    q2 = _run(lake, "quiet2")
    g = q2["shared_gate"]
    ran = [p for p, sr in g.suite_results.items() if not sr.skipped]
    assert ran == [target]
    assert g.suite_results[target].success
    assert (lake.report_dir("quiet2", "shared") / "data_docs" / "index.html").exists()
    assert all(p.get("unchanged") for p in q2["published"])
    assert {p: lake.current_version(p) for p in products} == versions


def test_a_delivery_after_quiet_days_is_standardized_built_and_validated(quiet):
    lake, _, _, versions, _ = quiet
    change = changeset.write_next_day(lake, DAY1, DAY2)
    assert change
    d2 = _run(lake, "day2")
    assert "skipped" not in d2["std"] and "skipped" not in d2["shared"]
    assert d2["std_gate"].suite_results and all(sr.skipped is None for sr in d2["std_gate"].suite_results.values())
    new = [p for p in d2["published"] if not p.get("unchanged")]
    assert new, d2["published"]
    for p in new:  # a product with a new version had its suite run this day
        assert d2["shared_gate"].suite_results[p["product"]].skipped is None, p
        assert p["version"] == versions[p["product"]] + 1
    # and a quiet day after it reuses day 2's outputs
    d3 = _run(lake, "quiet3")
    assert d3["shared"]["reused_from"] == "day2" and "skipped" in d3["std"]
    assert all(p.get("unchanged") for p in d3["published"])
