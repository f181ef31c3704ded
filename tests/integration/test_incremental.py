"""Incremental next-day processing gives exactly what a full rebuild of the same deliveries gives.

Lake A runs day 1 (extract -> standardized -> gate -> shared -> gate -> publish), then gets a
next-day change set (benchmarks/changeset.py: change files with 1 % changed rows for snapshot
feeds, 1 % new rows for incremental feeds) and runs again: only the new batches are extracted,
standardized and validated. Lake B gets both days' landing files at once and runs once.

"Byte-for-byte" here means: for every shared product, the current published Parquet file of A
and of B are the identical byte sequence (same SHA-256). Outputs are written by DuckDB with an
ORDER BY on each product's unique key, so identical content gives identical files; the test
also compares the sorted row content so that a failure says which rows differ.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from govlake import generate, ingest, metadata, transform
from govlake.storage import Lake

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import changeset  # noqa: E402

pytestmark = pytest.mark.integration
DAY1, DAY2 = "2026-11-20", "2026-11-21"


def _run(lake: Lake, run_id: str) -> dict:
    for ds in metadata.datasets():
        ingest.extract_dataset(ds, lake)
    transform.build_standardized(lake, run_id)
    batches = transform.run_batches(lake, run_id)
    transform.gate_standardized(lake, run_id)
    transform.build_shared(lake, run_id)
    transform.gate_shared(lake, run_id)
    return {"batches": batches, "published": transform.publish_layer(lake, run_id)}


def _q(sql: str):
    return duckdb.connect().execute(sql)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    base = tmp_path_factory.mktemp("incremental")
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    a, b = Lake(base / "a").ensure(), Lake(base / "b").ensure()
    try:
        os.environ["GOVLAKE_LAKE_ROOT"] = str(a.root)
        generate.generate(a, people=200, date=DAY1, seed=7, progress=False)
        day1 = _run(a, "day1")
        change = changeset.write_next_day(a, DAY1, DAY2)
        day2 = _run(a, "day2")
        shutil.copytree(a.landing_root, b.landing_root, dirs_exist_ok=True)
        os.environ["GOVLAKE_LAKE_ROOT"] = str(b.root)
        full = _run(b, "full")
        os.environ["GOVLAKE_LAKE_ROOT"] = str(a.root)
        yield a, b, {"day1": day1, "day2": day2, "full": full, "change": change}
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old


def test_change_set_is_about_one_percent(lakes):
    a, _, r = lakes
    for ds in metadata.datasets():
        n1 = _q(f"select count(*) from read_parquet('{a.raw_glob(ds.dept, ds.name)}') "
                        f"where _delivery_date = '{DAY1}'").fetchone()[0]
        n2 = r["change"][ds.id]["rows"]
        assert n2 == -(-n1 // 100), (ds.id, n1, n2)  # rows 1, 101, 201, ...


def test_next_day_standardizes_and_validates_only_new_batches(lakes):
    a, _, r = lakes
    day2 = r["day2"]["batches"]
    assert day2, "the next day standardized nothing"
    for fid, batches in day2.items():
        assert all(b.startswith(DAY2.replace("-", "")) for b in batches), (fid, batches)
    assert not set(sum(day2.values(), [])) & set(sum(r["day1"]["batches"].values(), []))
    # the gate of day 2 validated only the files of the new batches
    for ds in metadata.datasets():
        stg = a.candidate("day2") / "standardized" / f"stg_{ds.dept}__{ds.name}.parquet"
        days = {d for (d,) in _q(f"select distinct _delivery_date from '{stg}'").fetchall()}
        assert days <= {DAY2}, (ds.id, days)


def test_incremental_published_content_equals_full_rebuild(lakes):
    a, b, r = lakes
    products = transform.shared_products()
    assert products
    for product in products:
        fa = sorted(a.current_dir(product).glob("*.parquet"))
        fb = sorted(b.current_dir(product).glob("*.parquet"))
        assert [f.name for f in fa] == [f.name for f in fb], product
        for x, y in zip(fa, fb):
            # sorted row content first (a readable failure), then the bytes
            # hive_partitioning off: the version folder v=<n> is not a column of the data
            ra = sorted(map(repr, _q(f"select * from read_parquet('{x}', hive_partitioning=false)").fetchall()))
            rb = sorted(map(repr, _q(f"select * from read_parquet('{y}', hive_partitioning=false)").fetchall()))
            only_a, only_b = sorted(set(ra) - set(rb)), sorted(set(rb) - set(ra))
            assert ra == rb, f"{product}: rows only incremental {only_a[:3]}, only full rebuild {only_b[:3]}"
            assert _sha(x) == _sha(y), f"{product}: same rows but the files differ ({x} vs {y})"


def test_change_files_are_applied(lakes):
    """The changed rows of a snapshot feed reach the shared layer (household address '（变更）')."""
    a, _, _ = lakes
    pb = next(a.current_dir("population_base").glob("*.parquet"))
    changed = _q(f"select count(*) from '{pb}' where address like '%（变更）'").fetchone()[0]
    assert changed > 0
