"""Incremental next-day processing gives exactly what a full rebuild of the same deliveries gives.

Lake A runs day 1 (extract -> standardized -> gate -> shared -> gate -> publish), then gets a
next-day change set (benchmarks/changeset.py: change files with 1 % changed rows for snapshot
feeds, 1 % new rows for incremental feeds) and runs again: only the new batches are extracted,
standardized and validated. Lake B gets both days' landing files at once and runs once.

Days 3 and 4 go on from there (lake C is the full rebuild of all four days' files): day 3 brings
a new full tax snapshot with two entities gone (a deletion) and one changed; day 4 corrected
redeliveries that supersede earlier batches (the day-1 marriage file, with another husband on one
row: the person known to civil_affairs only through that row loses it — only the int rows as
they were before the change name him; the day-2 household change file, with a row fewer: that
person falls back to the snapshot row). The corrections come last so that no later full rebuild
of a product hides a mistake of the touched-keys path. The shared build of each day must take
the path the design says (docs/adr/0010): touched keys only, or a full rebuild of what a new
full snapshot reaches; the compiled SQL of each incremental model names its mode.

"Byte-for-byte" here means: for every shared product, the current published Parquet file of A
and of B are the identical byte sequence (same SHA-256). Outputs are written by DuckDB with an
ORDER BY on each product's unique key, so identical content gives identical files; the test
also compares the sorted row content so that a failure says which rows differ. A product with
L3/L4 columns is published encrypted (ADR 0014: a fresh data key per file, so the bytes always
differ): for it the decrypted files are compared instead (rows in order, schema with metadata,
row groups).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from govlake import ingest, metadata, transform
from govlake_synth import generate
from govlake.sharing import crypto
from govlake.storage import Lake

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import changeset  # noqa: E402

pytestmark = pytest.mark.integration
DAY1, DAY2, DAY3, DAY4 = "2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"
MODE = re.compile(r"-- govlake_(?:dedup|touched): (all|keys|none)")


def _modes(lake: Lake) -> dict[str, str]:
    """model -> the mode its compiled SQL of the last shared build names (all / keys / none), or
    "not built" for a model that build left out (no changed feed reaches it)."""
    import json

    target = lake.meta_root / "dbt" / "target"
    ran = {r["unique_id"].split(".")[-1] for r in
           json.loads((target / "run_results.json").read_text(encoding="utf-8"))["results"]}
    out = {}
    for f in (target / "compiled").rglob("*.sql"):
        m = MODE.search(f.read_text(encoding="utf-8"))
        if m:
            out[f.stem] = m.group(1) if f.stem in ran else "not built"
    return out


def _run(lake: Lake, run_id: str) -> dict:
    for ds in metadata.datasets():
        ingest.extract_dataset(ds, lake)
    transform.build_standardized(lake, run_id)
    batches = transform.run_batches(lake, run_id)
    transform.gate_standardized(lake, run_id)
    transform.build_shared(lake, run_id)
    modes = _modes(lake)
    transform.gate_shared(lake, run_id)
    return {"batches": batches, "modes": modes, "published": transform.publish_layer(lake, run_id)}


def _ds(fid: str) -> metadata.Dataset:
    return next(d for d in metadata.datasets() if d.id == fid)


def _enc(ds: metadata.Dataset) -> str:
    return {"gb18030": "gb18030", "utf-8-sig": "utf-8-sig"}.get(ds.encoding, "utf-8")


def _read_csv(ds: metadata.Dataset, path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding=_enc(ds), newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write_csv(ds: metadata.Dataset, path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=_enc(ds), newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)


def _day4_corrections(lake: Lake, published_day2: Path) -> dict:
    """Corrected redeliveries (same file name and date, other content: a new batch that
    supersedes the first): the day-1 marriage file with another husband on one row (one named by
    no other marriage row), the day-2 household change file without its first row and another
    address on the others."""
    info = {}
    ds = _ds("civil_affairs.marriage_registration")
    path = lake.landing(ds.dept, ds.name, DAY1) / f"{ds.name}_{DAY1.replace('-', '')}.{ds.format}"
    header, rows = _read_csv(ds, path)
    _, day2 = _read_csv(ds, lake.landing(ds.dept, ds.name, DAY2) / f"{ds.name}_{DAY2.replace('-', '')}.{ds.format}")
    h, w = header.index("男方身份证号"), header.index("女方身份证号")
    named = [r[h] for r in rows + day2] + [r[w] for r in rows + day2]
    pb = next((published_day2 / "population_base").glob("*.parquet"))
    known = {r[0] for r in _q(f"select id_number from {_src(pb)} where known_by like '%civil_affairs%'").fetchall()}
    # a husband known to civil_affairs through this row only: after the correction no marriage
    # row names him
    i = next(k for k in range(len(rows) - 1, 0, -1) if named.count(rows[k][h]) == 1 and rows[k][h] in known)
    info["old_husband"], rows[i][h] = rows[i][h], rows[0][h]
    info["new_husband"] = rows[i][h]
    _write_csv(ds, path, header, rows)
    ds = _ds("public_security.household_registration")
    path = next(lake.landing(ds.dept, ds.name, DAY2).glob("*.delta.*"))
    header, rows = _read_csv(ds, path)
    assert len(rows) >= 2
    a = header.index("户籍地址")
    info["reverted_row"] = rows[0]
    rows = [r[:a] + [r[a].replace("（变更）", "（更正）")] + r[a + 1:] for r in rows[1:]]
    _write_csv(ds, path, header, rows)
    return info


def _day3_tax_snapshot(lake: Lake) -> dict:
    """A new full tax snapshot: the day-1 rows without the first two (deregistered), the
    third with another tax authority."""
    ds = _ds("tax.taxpayer_registration")
    header, rows = _read_csv(ds, next(lake.landing(ds.dept, ds.name, DAY1).glob("*.csv")))
    gone = [r[header.index("纳税人识别号")] for r in rows[:2]]
    rows = rows[2:]
    t = header.index("主管税务机关")
    rows[0][t] = rows[0][t] + "（更名）"
    _write_csv(ds, lake.landing(ds.dept, ds.name, DAY3) / f"{ds.name}_{DAY3.replace('-', '')}.csv", header, rows)
    return {"gone": gone}


def _keep_current(lake: Lake, dest: Path) -> Path:
    for product in transform.shared_products():
        shutil.copytree(lake.current_dir(product), dest / product)
    return dest


_CON = duckdb.connect()


def _q(sql: str, params=None):
    return _CON.execute(sql, params or [])


def _src(p: Path) -> str:
    """SQL reading a published file: products with L3/L4 columns are encrypted at rest (ADR 0014)."""
    return crypto.read_parquet_sql(p, _CON, "hive_partitioning = false")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    base = tmp_path_factory.mktemp("incremental")
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    a, b, c = Lake(base / "a").ensure(), Lake(base / "b").ensure(), Lake(base / "c").ensure()

    def run(lake: Lake, run_id: str) -> dict:
        os.environ["GOVLAKE_LAKE_ROOT"] = str(lake.root)
        return _run(lake, run_id)

    try:
        os.environ["GOVLAKE_LAKE_ROOT"] = str(a.root)
        generate.generate(a, people=200, date=DAY1, seed=7, progress=False)
        day1 = run(a, "day1")
        change = changeset.write_next_day(a, DAY1, DAY2)
        day2 = run(a, "day2")
        a_day2 = _keep_current(a, base / "a_day2")
        shutil.copytree(a.landing_root, b.landing_root, dirs_exist_ok=True)
        full = run(b, "full")
        day3_info = _day3_tax_snapshot(a)
        day3 = run(a, "day3")
        day4_info = _day4_corrections(a, a_day2)
        day4 = run(a, "day4")
        shutil.copytree(a.landing_root, c.landing_root, dirs_exist_ok=True)
        full4 = run(c, "full4")
        os.environ["GOVLAKE_LAKE_ROOT"] = str(a.root)
        yield a, b, {"day1": day1, "day2": day2, "full": full, "change": change, "a_day2": a_day2,
                     "c": c, "day3": day3, "day3_info": day3_info, "day4": day4, "day4_info": day4_info,
                     "full4": full4}
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
    # the gate of day 2 validated only the rows of the new batches
    for ds in metadata.datasets():
        days = set(transform.standardized_rows(a, "day2", ds).column("_delivery_date").to_pylist())
        assert days <= {DAY2}, (ds.id, days)


def _assert_same_products(dirs_a: dict[str, Path], dirs_b: dict[str, Path]) -> None:
    products = transform.shared_products()
    assert products
    for product in products:
        fa = sorted(dirs_a[product].glob("*.parquet"))
        fb = sorted(dirs_b[product].glob("*.parquet"))
        assert fa and [f.name for f in fa] == [f.name for f in fb], product
        for x, y in zip(fa, fb):
            # sorted row content first (a readable failure), then the bytes
            # hive_partitioning off: the version folder v=<n> is not a column of the data
            ra = sorted(map(repr, _q(f"select * from {_src(x)}").fetchall()))
            rb = sorted(map(repr, _q(f"select * from {_src(y)}").fetchall()))
            only_a, only_b = sorted(set(ra) - set(rb)), sorted(set(rb) - set(ra))
            assert ra == rb, f"{product}: rows only incremental {only_a[:3]}, only full rebuild {only_b[:3]}"
            if crypto.is_encrypted(x) or crypto.is_encrypted(y):
                # a fresh data key per file: compare the decrypted files (rows in order, schema
                # with its metadata, row groups) instead of the bytes
                fa_, fb_ = (pq.ParquetFile(f, **crypto.arrow_read_options(f)) for f in (x, y))
                assert fa_.schema_arrow.equals(fb_.schema_arrow, check_metadata=True), product
                assert [fa_.metadata.row_group(i).num_rows for i in range(fa_.num_row_groups)] == \
                    [fb_.metadata.row_group(i).num_rows for i in range(fb_.num_row_groups)], product
                assert fa_.read().equals(fb_.read()), f"{product}: same rows, different order ({x} vs {y})"
            else:
                assert _sha(x) == _sha(y), f"{product}: same rows but the files differ ({x} vs {y})"


def test_incremental_published_content_equals_full_rebuild(lakes):
    _, b, r = lakes
    products = transform.shared_products()
    _assert_same_products({p: r["a_day2"] / p for p in products}, {p: b.current_dir(p) for p in products})


def test_next_day_shared_build_recomputes_only_touched_keys(lakes):
    """Day 2 (change files, new incremental rows): every int_ and product table takes the
    touched-keys path, none is rebuilt whole; the first build and the full rebuild are whole."""
    _, _, r = lakes
    modes = r["day2"]["modes"]
    incremental = [m for m in modes if m.startswith("int_")]
    assert len(incremental) == 10, modes  # 6 feeds, latest marriage event, 3 product tables
    assert {m: v for m, v in modes.items() if v != "keys"} == {}, modes
    assert set(r["day1"]["modes"].values()) == {"all"} and set(r["full"]["modes"].values()) == {"all"}


def test_superseding_corrections_and_a_new_snapshot_equal_full_rebuild(lakes):
    a, _, r = lakes
    products = transform.shared_products()
    _assert_same_products({p: a.current_dir(p) for p in products}, {p: r["c"].current_dir(p) for p in products})
    m3, m4 = r["day3"]["modes"], r["day4"]["modes"]
    # day 3: a new full snapshot replaces the whole feed, and what it reaches is rebuilt whole
    assert m3["int_tax__taxpayer_registration"] == "all"
    assert m3["int_legal_entity_base"] == "all" and m3["int_population_base"] == "all"
    # feeds without a new batch, and what only they reach, are not built at all (their files are
    # the previous build's, linked)
    assert m3["int_public_security__household_registration"] == "not built"
    assert m3["int_marriage_household_check"] == "not built"
    # day 4: corrections touch keys only; feeds without a new batch recompute nothing
    assert m4["int_civil_affairs__marriage_registration"] == "keys"
    assert m4["int_public_security__household_registration"] == "keys"
    assert m4["int_tax__taxpayer_registration"] == "not built"
    assert m4["int_population_base"] == "keys" and m4["int_marriage_latest_event"] == "keys"


def test_corrections_reach_the_products(lakes):
    """What the day-3/day-4 deliveries change is visible in the published products."""
    a, _, r = lakes
    fix, snap = r["day4_info"], r["day3_info"]
    pb = next(a.current_dir("population_base").glob("*.parquet"))
    le = next(a.current_dir("legal_entity_base").glob("*.parquet"))
    new = _q(f"select known_by from {_src(pb)} where id_number = ?", [fix["new_husband"]]).fetchone()
    assert new and "civil_affairs" in new[0]
    old = _q(f"select known_by from {_src(pb)} where id_number = ?", [fix["old_husband"]]).fetchone()
    assert old is None or "civil_affairs" not in old[0], old
    assert _q(f"select count(*) from {_src(pb)} where address like '%（更正）'").fetchone()[0] > 0
    assert _q(f"select count(*) from {_src(pb)} where address like '%（变更）'").fetchone()[0] == 0
    gone = _q(f"select count(*) from {_src(le)} where uscc in (select unnest(?)) and in_tax", [snap["gone"]]).fetchone()[0]
    assert gone == 0
    assert _q(f"select count(*) from {_src(le)} where tax_authority like '%（更名）'").fetchone()[0] == 1


def test_change_files_are_applied(lakes):
    """The changed rows of a snapshot feed reach the shared layer (household address '（变更）')."""
    _, _, r = lakes
    pb = next((r["a_day2"] / "population_base").glob("*.parquet"))
    changed = _q(f"select count(*) from {_src(pb)} where address like '%（变更）'").fetchone()[0]
    assert changed > 0


def test_next_day_gate_validates_the_touched_rows_and_the_whole_table(lakes):
    """Day 2 recomputed some keys of every product: each product's suite ran its row-level
    expectations on the rows of those keys and its table-level ones (row count, columns) on the
    whole file; a wrong value in a touched row still fails the gate."""
    a, _, _ = lakes
    report = json.loads((a.report_dir("day2", "shared") / "validation.json").read_text(encoding="utf-8"))
    for product in transform.shared_products():
        s = report["suites"][product]
        assert s["success"] and not s["skipped"], (product, s)
        assert s["scope"] and "keys this build recomputed" in s["scope"], (product, s["scope"])
        rows = pq.read_metadata(transform.output_path(a.candidate("day2"), product)).num_rows
        assert s["row_count"] == rows, product  # the row count expectation saw the whole file
        touched = json.loads((transform.touched_dir(a, "day2") / f"{product}.json").read_text(encoding="utf-8"))
        assert 0 < touched["count"] < rows, (product, touched)
    # a touched row with a value the suite refuses fails the scoped validation
    pb = transform.output_path(a.candidate("day2"), "population_base")
    keys = transform.touched_dir(a, "day2") / "population_base.parquet"
    bad = a.candidate("day2") / "doctored_population_base.parquet"
    _q(f"copy (select * replace (case when id_number = (select min(id_number) from '{keys}') then 'X' "
       f"else gender_code end as gender_code) from '{pb}') to '{bad}' (format parquet)")
    from govlake import gate
    res = gate.validate(a, "shared", {"population_base": gate.Scoped(bad, keys, ("id_number",), "test")}, "doctored")
    assert not res.success
    assert [(f.type, f.column) for f in res.suite_results["population_base"].failed] == \
        [("expect_column_values_to_be_in_set", "gender_code")]
