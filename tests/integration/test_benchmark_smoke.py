"""The benchmark runs end to end at a small size (a smoke test: it works, no timing assertion).

Runs ``benchmarks/run.py --people 300`` as a user would (own process), without the Airflow
comparison (covered by tests/integration/test_pipeline_e2e.py) and with Spark only when pyspark
is installed (it is not a govlake dependency)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from govlake.transform import shared_products

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke(tmp_path):
    try:
        import pyspark  # noqa: F401
        spark = []
    except ImportError:
        spark = ["--no-spark"]
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--people", "300", "--out", str(out),
         "--no-airflow", *spark],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "floor" in proc.stdout  # the floor ratio line is printed
    res = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    stages = {s["stage"]: s for s in res["runs"]["govlake"]["stages"]}
    for name in ("extract", "dbt standardized", "gate standardized", "dbt shared", "gate shared", "publish", "total"):
        for tag in ("full", "incremental"):
            s = stages[f"{tag}: {name}"]
            assert s["wall_s"] > 0 and s["cpu_s"] >= 0 and s["peak_rss_mb"] > 0, s
    # every feed was extracted, and the rows extracted are the rows the floor copied
    feeds = [s for s in stages.values() if s.get("group") == "extract_feed" and s["stage"].startswith("full")]
    assert len(feeds) == 6 and all(s["rows"] > 0 for s in feeds)
    floor = res["runs"]["floor"]["stages"][0]
    assert sum(s["rows"] for s in feeds) == floor["rows"]
    assert res["runs"]["pandas"]["stages"][0]["rows"] == stages["full: extract public_security.household_registration"]["rows"]
    # the next day processed only the change set (about 1 %), and published
    inc = stages["incremental: extract"]["rows"]
    assert 0 < inc < stages["full: extract"]["rows"] / 10
    n_products = len(shared_products())  # the 3 integrated products and the 6 department resources
    assert len(stages["incremental: publish"]["published"]) == n_products
    # the trivial day (the next day's fixed part) extracted one household row and the ratios split
    # the next day into its fixed and proportional parts
    assert stages["trivial: extract"]["rows"] == 1
    assert stages["trivial: extract public_security.household_registration"]["rows"] == 1
    assert len(stages["trivial: publish"]["published"]) == n_products
    assert "next day, fixed part (a day on which one household row changes)" in res["ratios"]
    assert "next day, proportional part (next day - fixed part)" in res["ratios"]
    # a day with nothing delivered goes through every stage, extracts nothing and publishes no
    # new version of any product (each reported unchanged)
    assert stages["no change: extract"]["rows"] == 0
    assert len(stages["no change: publish"]["published"]) == n_products
    assert stages["no change: total"]["same_bytes_as_previous_day"] is True
    assert all(p.get("unchanged") for p in stages["no change: publish"]["published"])
    assert "every product unchanged, no new version: yes" in res["ratios"]["day with nothing delivered / full build"]
    for key in ("floor ratio (govlake end-to-end / floor)", "pandas / govlake (household standardization)",
                "gates / transform", "incremental next-day / full build"):
        assert key in res["ratios"], key
    # the household feed alone (the pandas/Spark denominator): extract + one dbt build of its stg_,
    # the same rows in and out as that feed in the full run, the full-run figure shown beside it
    hh = {s["stage"]: s for s in res["runs"]["household"]["stages"]}
    assert hh["household: extract public_security.household_registration"]["rows"] == \
        stages["full: extract public_security.household_registration"]["rows"]
    assert hh["household: total"]["wall_s"] >= hh["household: dbt +stg_public_security__household_registration"]["wall_s"] > 0
    check = res["runs"]["household"]["check"]
    # the standardized rows are a view over chk_ (no Parquet copy of them; the gate reads them in place)
    assert check["stg_relation"] == "VIEW" and check["outputs"] == []
    full_hh = next(c for c in stages["full: total"]["counts"] if c["dataset"] == "public_security.household_registration")
    assert (check["standardized"], check["quarantined"]) == (full_hh["standardized"], full_hh["quarantined"])
    assert check["quarantined"] > 0
    assert res["ratios"]["household equal work (household run vs full run)"].startswith("ok:")
    assert res["household_stage"]["denominator"] == "alone"
    assert f"govlake {hh['household: total']['wall_s']:.1f} s household feed alone" in \
        res["ratios"]["pandas / govlake (household standardization)"]
    assert "pandas / govlake in the full run (shares cores with social insurance)" in res["ratios"]
    # the baselines accept exactly the rows govlake standardizes (same rules, same work)
    assert res["ratios"]["pandas equal work (valid household rows vs govlake standardized)"].startswith("ok:")
    if spark:
        assert "skipped" in res["runs"]["spark"]
    else:
        assert res["runs"]["spark"]["stages"][0]["rows"] == res["runs"]["pandas"]["stages"][0]["rows"]
        assert res["ratios"]["spark equal work (valid household rows vs govlake standardized)"].startswith("ok:")
    # --keep was not given: the work lakes are gone, the results stay
    assert not (out / "lake").exists() and not (out / "lake_household").exists() and (out / "benchmark.json").exists()
