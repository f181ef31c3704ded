"""The generator's ground truth against the real pipeline: generate -> extract -> dbt.

Every row the truth calls invalid must be quarantined with that rule on that column, nothing
else may be quarantined, and every standardized value of a valid row must equal the truth's.
The marriage/household cross-check must find exactly the people the truth lists.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from govlake import ingest, metadata
from govlake_synth import generate
from govlake.dbt import output_path, run_dbt
from govlake.storage import Lake

pytestmark = pytest.mark.integration

DATE = "2026-11-24"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("gentruth")
    root, truth = base / "lake", base / "truth"
    lake = Lake(root).ensure()
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    os.environ["GOVLAKE_LAKE_ROOT"] = str(root)
    try:
        generate.generate(lake, 1500, DATE, seed=11, fault_rate=3.0, truth_dir=truth, progress=False)
        for ds in metadata.datasets():
            res = ingest.extract_dataset(ds, lake)
            assert all(f.status == "ingested" for f in res.files), res
        build_dir = lake.candidate("truth-run")
        run_dbt(["build"], lake=lake, build_dir=build_dir, raise_on_failure=False)
        yield lake, build_dir, truth
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old


def _norm(v):
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()[:10]
    if isinstance(v, Decimal):
        return f"{v:.4f}"
    return str(v)


def test_quarantine_matches_truth(built):
    _, build_dir, truth = built
    got = defaultdict(set)
    for r in pq.read_table(output_path(build_dir, "quarantine_rows")).to_pylist():
        got[(r["_source_file"], r["_row_number"])].add((r["rule"], r["column"]))
    n = 0
    for ds in metadata.datasets():
        rows = pq.read_table(truth / ds.dept / f"{ds.name}.parquet").to_pylist()
        prefix = f"{ds.dept}/{ds.name}/"
        expected = {(r["_source_file"], r["_row_number"]): {(r["reason"], r["column"])}
                    for r in rows if not r["valid"]}
        actual = {k: v for k, v in got.items() if k[0].startswith(prefix)}
        assert actual == expected, ds.id
        n += len(expected)
    assert n > 100


def test_standardized_values_match_truth(built):
    lake, _, truth = built
    for ds in metadata.datasets():
        rows = [r for r in pq.read_table(truth / ds.dept / f"{ds.name}.parquet").to_pylist() if r["valid"]]
        with duckdb.connect(str(lake.duckdb_path), read_only=True) as con:  # the stg_ view: not gated yet
            rows_stg = con.sql(f"select * from main.stg_{ds.dept}__{ds.name}").to_arrow_table().to_pylist()
        stg = {(r["_source_file"], r["_row_number"]): r for r in rows_stg}
        assert len(stg) == len(rows), ds.id
        for t in rows:
            s = stg[(t["_source_file"], t["_row_number"])]
            for c in ds.columns:
                assert _norm(s[c.element]) == t[c.element], (ds.id, t["_row_number"], c.element)


def test_marriage_household_check_matches_truth(built):
    _, build_dir, truth = built
    path = output_path(build_dir, "marriage_household_check")
    assert Path(path).exists(), "marriage_household_check was not built"
    got = {(r["id_number"], r["household_status_code"], r["derived_status_code"])
           for r in pq.read_table(path).to_pylist()}
    expected = {tuple(r.values()) for r in pq.read_table(truth / "marriage_household_check.parquet").to_pylist()}
    assert got == expected and len(expected) > 20
