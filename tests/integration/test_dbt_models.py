"""The dbt models on hand-written raw fixtures: standardized values, quarantine with reasons,
row conservation, dedup across batches and redeliveries, the shared products.

One `dbt build` per module (fixtures in tests/integration/dbt_fixtures.py, truth beside them).
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter, defaultdict
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq
import pytest

import dbt_fixtures as fx
from govlake import metadata
from govlake.dbt import DbtError, output_path, run_dbt
from govlake.storage import Lake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("dbtlake") / "lake"
    lake = Lake(root).ensure()
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    os.environ["GOVLAKE_LAKE_ROOT"] = str(root)
    try:
        batches, expected = fx.write(lake)
        build_dir = lake.candidate("test-run")
        run = run_dbt(["build"], lake=lake, build_dir=build_dir)
        print(f"\ndbt build on fixtures: {run.seconds:.1f} s, {len(run.nodes)} nodes")
        yield lake, run, batches, expected
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old


def q(sql: str, params=None):
    con = duckdb.connect()
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def parquet(run, model: str) -> str:
    if model.startswith("stg_"):  # a view over chk_ in the lake's DuckDB file (no Parquet of its own)
        p = run.build_dir.parent / "stg_export" / f"{model}.parquet"
        if not p.exists():
            p.parent.mkdir(exist_ok=True)
            with duckdb.connect(str(Lake(run.build_dir.parents[1]).duckdb_path), read_only=True) as con:
                con.execute(f"copy (select * from main.{model}) to '{p}' (format parquet)")
        return "'" + str(p) + "'"
    p = output_path(run.build_dir, model)
    assert p.exists(), f"{model} was not written to {p}"
    return "'" + str(p) + "'"


def int_table(lake: Lake, model: str, cols: str = "*"):
    con = duckdb.connect(str(lake.duckdb_path), read_only=True)
    try:
        return con.execute(f"select {cols} from main.{model}").fetchall()
    finally:
        con.close()


# ---- the build ----------------------------------------------------------------------------

def test_build_writes_every_layer_output_as_zstd_parquet(built):
    lake, run, _, _ = built
    expected = {"quarantine_rows", "population_base", "legal_entity_base", "marriage_household_check"}
    expected |= {d.resource for d in metadata.datasets()}  # ds_ shared resources (ADR 0015)
    assert set(run.outputs()) == expected
    for model in expected:
        meta = pq.ParquetFile(output_path(run.build_dir, model)).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD", model
    statuses = Counter(n["status"] for n in run.nodes)
    assert set(statuses) <= {"success", "pass"}, statuses
    # the singular row-conservation test ran and passed
    assert any(n["name"] == "assert_row_conservation" and n["status"] == "pass" for n in run.nodes)


# ---- standardized values ------------------------------------------------------------------

def test_household_values_standardized(built):
    _, run, _, _ = built
    rows = q(f"""select _row_number, id_number, name, gender_code, ethnicity_code, birth_date, address,
                        division_code, marital_status_code, phone
                 from {parquet(run, 'stg_public_security__household_registration')}
                 where _batch_id = 'ps-20261121b' order by _row_number""")
    by_row = {r[0]: r[1:] for r in rows}
    assert sorted(by_row) == list(range(1, 10)), "rows 1-9 are valid, 10-20 are not"
    assert by_row[1] == (fx.P1, "张三", "1", "01", dt.date(1980, 1, 1), "北京市东城区景山前街4号",
                         "110101", "40", "13800000001")  # +86 138-0000-0001
    assert by_row[2][3] == "01" and by_row[2][8] == "13800000002"  # 汉 ; '138 0000 0002'
    assert by_row[3][3] == "03"  # 回族
    assert by_row[4][8] is None  # empty phone
    assert by_row[5][7] == "40" and by_row[6][7] == "22"  # 离婚, 再婚
    # 15-digit legacy ID upgraded; empty marital status -> 90
    assert by_row[7][0] == fx.P7 and by_row[7][7] == "90" and by_row[7][2] == "2"
    # full-width digits, trailing spaces, lower-case x
    assert by_row[8][0] == fx.P8 and by_row[8][7] == "30"
    # Chinese values round-trip exactly (middle dot, a character outside GBK)
    assert by_row[9][1] == "阿卜杜拉·艾山" and by_row[9][5] == "乌鲁木齐市天山区𠀀路1号"
    assert by_row[9][3] == "05" and by_row[9][7] == "21"


def test_other_feeds_standardized(built):
    _, run, _, _ = built
    ev = dict(((r[0], r[1]), r[2:]) for r in q(
        f"select certificate_number, event_type, event_date, husband_id_number, registry_office "
        f"from {parquet(run, 'stg_civil_affairs__marriage_registration')} where _batch_id <> 'ca-20261122'"))
    assert ev[("J2005-001", "marriage")] == (dt.date(2005, 6, 1), fx.P1, "东城区民政局")  # 2005年6月1日
    assert ev[("J2021-002", "reissue")][0] == dt.date(2023, 1, 1)
    assert ev[("L2015-005", "divorce")][0] == dt.date(2015, 5, 5)

    births = {r[0]: r[1:] for r in q(
        f"select certificate_number, gender_code, birth_date, father_id_number "
        f"from {parquet(run, 'stg_health__birth_certificate')} where _batch_id = 'he-20261121'")}
    assert births["Q110000001"] == ("1", dt.date(2026, 11, 1), fx.FATHER)  # 1 = male in this system
    assert births["Q110000002"] == ("2", dt.date(2026, 11, 2), None)  # 0 = female; empty father

    tax = {r[0]: r[1:] for r in q(
        f"select uscc, registration_date, credit_rating from {parquet(run, 'stg_tax__taxpayer_registration')} "
        f"where _batch_id = 'tx-20261123'")}
    assert tax[fx.USCC_B] == (dt.date(2018, 12, 25), "M")  # full-width code normalized; YYYY/M/D
    ent = {r[0]: r[1:] for r in q(
        f"select uscc, establishment_date, registered_capital_10k_cny, enterprise_name "
        f"from {parquet(run, 'stg_market_regulation__enterprise_registration')}")}
    assert ent[fx.USCC_C][0] == dt.date(2023, 5, 1)  # Excel serial 45047
    assert Decimal(str(ent[fx.USCC_B][1])) == Decimal("50.5")
    assert ent[fx.USCC_C][2] == "厦门市某机关𠀀"
    si = q(f"select id_number, insurance_type, start_month, insurance_status, employer_uscc "
           f"from {parquet(run, 'stg_human_resources__social_insurance')} where _batch_id = 'hr-20261121' "
           f"order by _row_number")
    assert si[0][:2] == (fx.P1, "110") and si[0][2] is not None and si[0][4] == fx.USCC_A
    assert si[2][3] == "2" and si[2][4] is None


# ---- quarantine ---------------------------------------------------------------------------

def test_invalid_rows_quarantined_with_rule_and_message(built):
    _, run, batches, expected = built
    got: dict[tuple, set[str]] = defaultdict(set)
    rows = q(f"""select dept, dataset, _batch_id, _source_file, _row_number, rule, "column", original_value, message
                 from {parquet(run, 'quarantine_rows')}""")
    files = {b.batch_id: b.source_file for b in batches}
    raw = {(b.dept, b.dataset, b.batch_id, i + 1): r for b in batches for i, r in enumerate(b.rows)}
    for dept, dataset, batch, source_file, rn, rule, col, value, message in rows:
        got[(dept, dataset, batch, rn)].add(rule)
        assert source_file == files[batch]
        assert source_file in message and f"row {rn}" in message and rule in message
        if rule != "row.duplicate":
            cols = metadata.dataset(dept, dataset).column_names
            assert col in cols, (rule, col)
            assert col in message
            assert value == raw[(dept, dataset, batch, rn)][cols.index(col)]  # the value as delivered
    assert dict(got) == expected.quarantined


def test_quarantined_rows_do_not_reach_staging(built):
    _, run, _, _ = built
    for d in metadata.datasets():
        leaked = q(f"""select count(*) from {parquet(run, f'stg_{d.dept}__{d.name}')} s
                       join {parquet(run, 'quarantine_rows')} x
                         on x._batch_id = s._batch_id and x._source_file = s._source_file
                        and x._row_number = s._row_number""")[0][0]
        assert leaked == 0, d.id


def test_row_conservation_per_feed_and_batch(built):
    _, run, batches, _ = built
    quarantined = {(r[0], r[1]): r[2] for r in q(
        f"select dataset, _batch_id, count(distinct (_source_file, _row_number)) "
        f"from {parquet(run, 'quarantine_rows')} group by all")}
    for b in batches:
        staged = q(f"select count(*) from {parquet(run, f'stg_{b.dept}__{b.dataset}')} where _batch_id = ?",
                   [b.batch_id])[0][0]
        assert len(b.rows) == staged + quarantined.get((b.dataset, b.batch_id), 0), b.batch_id


# ---- dedup across batches -----------------------------------------------------------------

def test_snapshot_takes_latest_delivery_and_ignores_superseded_batch(built):
    lake, _, _, _ = built
    hh = int_table(lake, "int_public_security__household_registration", "id_number, name, address, _batch_id")
    assert {r[3] for r in hh} == {"ps-20261121b"}  # not the superseded 'a' batch of the same date
    assert len(hh) == 9 and len({r[0] for r in hh}) == 9
    p1 = [r for r in hh if r[0] == fx.P1][0]
    assert p1[1:3] == ("张三", "北京市东城区景山前街4号")
    si = int_table(lake, "int_human_resources__social_insurance", "id_number, insurance_type, _batch_id")
    assert {r[2] for r in si} == {"hr-20261121"}
    assert fx.P9 not in {r[0] for r in si}  # only in the older snapshot
    tax = dict(((r[0], r[1:]) for r in int_table(lake, "int_tax__taxpayer_registration",
                                                  "uscc, taxpayer_name, credit_rating")))
    assert tax[fx.USCC_A] == ("厦门某某科技有限公司", "A")


def test_incremental_union_dedups_on_key(built):
    lake, _, _, _ = built
    ev = int_table(lake, "int_civil_affairs__marriage_registration", "certificate_number, event_type, _batch_id")
    keys = [(r[0], r[1]) for r in ev]
    assert len(keys) == len(set(keys)) == 7
    resent = {r[0] for r in ev if r[2] == "ca-20261122"}
    assert resent == {"L2020-004", "L2015-005", "J2021-002", "J2020-006"}  # the latest delivery wins
    births = {r[0]: r[1] for r in int_table(lake, "int_health__birth_certificate",
                                            "certificate_number, father_id_number")}
    assert births == {"Q110000001": fx.FATHER, "Q110000002": fx.FATHER}  # corrected in a later batch


# ---- shared products ----------------------------------------------------------------------

def test_marriage_household_check_exact(built):
    _, run, _, _ = built
    got = q(f"select * from {parquet(run, 'marriage_household_check')} order by id_number")
    cols = [r[0] for r in q(f"describe select * from {parquet(run, 'marriage_household_check')}")]
    assert cols == ["id_number", "name", "household_status_code", "derived_status_code",
                    "latest_event_type", "latest_event_date", "certificate_number"]
    assert got == sorted([
        # married 2005, divorced 2020; household still says 已婚
        (fx.P2, "李四", "20", "40", "divorce", dt.date(2020, 9, 9), "L2020-004"),
        # married 2021 (the 2023 reissue changes nothing); household says 未婚
        (fx.P3, "王五", "10", "20", "marriage", dt.date(2021, 3, 8), "J2021-002"),
        (fx.P4, "赵六", "10", "20", "marriage", dt.date(2021, 3, 8), "J2021-002"),
        # married 2010, divorced 2015, remarried 2020; household says 离婚
        (fx.P5, "孙七", "40", "20", "marriage", dt.date(2020, 10, 10), "J2020-006"),
    ])
    # P1 (divorced, household 离婚) and P6 (remarried, household 再婚) agree: not listed


def test_population_base(built):
    _, run, _, _ = built
    cols = [r[0] for r in q(f"describe select * from {parquet(run, 'population_base')}")]
    assert cols == ["id_number", "name", "gender_code", "birth_date", "ethnicity_code", "division_code",
                    "address", "marital_status_code", "phone", "in_household_registration", "known_by",
                    "department_count"]
    pop = {r[0]: r for r in q(f"select * from {parquet(run, 'population_base')}")}
    assert pop[fx.P1][10:] == ("civil_affairs,human_resources,public_security,tax", 4)
    assert pop[fx.P1][9] is True and pop[fx.P1][1] == "张三"
    assert pop[fx.P9][1:10] == (None,) * 8 + (False,)  # known only from marriage registration
    assert pop[fx.P9][10:] == ("civil_affairs", 1)
    assert pop[fx.MOTHER][10:] == ("health,human_resources", 2)
    assert pop[fx.LEGAL1][10:] == ("market_regulation,tax", 2)
    # every valid household person, the upgraded 15-digit one included, exactly once
    assert {fx.P1, fx.P2, fx.P3, fx.P4, fx.P5, fx.P6, fx.P7, fx.P8, fx.P10} <= set(pop)
    assert "1.10105E+17" not in pop and "110105194912310000" not in pop


def test_legal_entity_base(built):
    _, run, _, _ = built
    ent = {r[0]: r for r in q(f"select uscc, enterprise_name, taxpayer_name, legal_rep_id_number, "
                             f"credit_rating, in_market_regulation, in_tax "
                             f"from {parquet(run, 'legal_entity_base')}")}
    assert set(ent) == {fx.USCC_A, fx.USCC_B, fx.USCC_C, fx.USCC_D}
    assert ent[fx.USCC_A][1:] == ("厦门某某科技有限公司", "厦门某某科技有限公司", fx.LEGAL1, "A", True, True)
    assert ent[fx.USCC_C][5:] == (True, False)
    assert ent[fx.USCC_D][5:] == (False, True)  # its enterprise row was quarantined (status)
    assert ent[fx.USCC_B][2] == "广州某某贸易有限公司" and ent[fx.USCC_B][5:] == (True, True)


def test_dbt_error_names_node_and_runner_is_reusable(built):
    """A second in-process invocation works, and a failure raises DbtError naming the node."""
    lake, run, _, _ = built
    before = output_path(run.build_dir, "quarantine_rows").stat().st_mtime_ns
    with pytest.raises(DbtError) as err:
        run_dbt(["run"], lake=lake, build_dir=run.build_dir, select="quarantine_rows",
                vars={"govlake_datasets": ["public_security.household_registration"]})
    # the var no longer matches the feeds declared in the source YAML: a compilation error
    assert "quarantine_rows" in str(err.value) and "govlake_datasets" in str(err.value)
    assert any(name == "quarantine_rows" for name, _, _ in err.value.failures)
    assert output_path(run.build_dir, "quarantine_rows").stat().st_mtime_ns == before


def test_unique_columns_catches_a_repeated_key(built):
    """The uniqueness tests (generic test unique_columns, tests/generic) fail when a key repeats:
    one int_ row copied once more makes dbt test fail on that model, and only that test."""
    lake, run, _, _ = built
    table = "main.int_tax__taxpayer_registration"
    con = duckdb.connect(str(lake.duckdb_path))
    con.execute(f"insert into {table} select * from {table} limit 1")
    con.close()
    try:
        with pytest.raises(DbtError) as err:
            run_dbt(["test"], lake=lake, build_dir=run.build_dir,
                    select="test_name:unique_columns,int_tax__taxpayer_registration")
        assert [name for name, _, _ in err.value.failures] == [
            "unique_columns_int_tax__taxpayer_registration_uscc"]
        assert "Got 1 result" in err.value.failures[0][2]
    finally:
        con = duckdb.connect(str(lake.duckdb_path))
        con.execute(f"delete from {table} where rowid = (select max(rowid) from {table})")
        con.close()
    # and passes again once the copy is gone (the same tests over every model pass)
    ok = run_dbt(["test"], lake=lake, build_dir=run.build_dir, select="test_name:unique_columns")
    tests = [n for n in ok.nodes if n["name"].startswith("unique_columns_")]
    assert len(tests) == 12 and all(n["status"] == "pass" for n in tests)  # chk_ and int_ of 6 feeds


def test_every_kept_layer_file_has_a_final_order_by(built):
    """DuckDB runs with preserve_insertion_order false (profiles.yml), so a layer file's row order,
    and with it its bytes (incremental vs full rebuild, test_incremental), is fixed only by an
    ORDER BY: every product's and quarantine_rows' compiled SQL must end with one. The stg_
    models (a run's gate input) are views over chk_, not files (govlake_stage)."""
    import json
    import re

    lake, _, _, _ = built
    target = lake.meta_root / "dbt" / "target"
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    external = [n for n in manifest["nodes"].values()
                if n["resource_type"] == "model" and n["config"].get("materialized") == "external"]
    feeds = metadata.datasets()
    assert len(external) == len(feeds) + 4  # ds_ per feed, quarantine_rows, three products
    assert all(n["config"].get("materialized") == "view"
               for n in manifest["nodes"].values() if n["name"].startswith("stg_"))
    kept = external
    assert sorted(n["name"] for n in kept) == sorted(["legal_entity_base", "marriage_household_check",
                                                      "population_base", "quarantine_rows"]
                                                     + [d.resource for d in feeds])
    for n in kept:
        sql = (target / "compiled" / "govlake" / n["original_file_path"]).read_text(encoding="utf-8")
        code = re.sub(r"--[^\n]*", "", sql).lower()
        at = code.rfind("order by")
        depth = [0]
        for ch in code[at:] if at >= 0 else "":
            depth.append(depth[-1] + (ch == "(") - (ch == ")"))
        # found, and not inside a subquery or a window: no ")" closes a "(" opened before it
        assert at >= 0 and min(depth) >= 0, f"{n['name']}: the layer file needs a final ORDER BY on a unique key"


def test_next_run_reuses_the_parse_and_writes_into_its_own_build_dir(built, tmp_path):
    """Every run has its own candidate folder. It must not be part of the dbt profile: dbt hashes
    the profile's connection settings and re-parses the whole project when they change (1.6 s of
    every run at any size). A second run into another folder parses partially and still writes
    its layer files there."""
    lake, _, _, _ = built
    log = lake.meta_root / "dbt" / "logs" / "dbt.log"
    start = log.stat().st_size
    other = tmp_path / "next-run"
    run = run_dbt(["run"], lake=lake, build_dir=other, select="stg_tax__taxpayer_registration")
    with log.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    assert "Running with dbt" in text
    assert "Unable to do partial parsing" not in text, [
        line for line in text.splitlines() if "partial parsing" in line]
    assert [n["status"] for n in run.nodes if n["name"] == "stg_tax__taxpayer_registration"] == ["success"]


def test_chk_key_tested_on_new_batches_and_every_batch_counted_against_the_ledger(built):
    """chk_ key uniqueness is tested on the batches not gated yet (this run's); a row repeated in
    a batch gated earlier is caught by rows_match_ledger, which counts every batch every run."""
    lake, run, _, _ = built
    table = "main.chk_tax__taxpayer_registration"
    select = "chk_tax__taxpayer_registration,test_name:unique_columns chk_tax__taxpayer_registration,test_name:rows_match_ledger"
    con = duckdb.connect(str(lake.duckdb_path))
    batch = con.execute(f"select min(_batch_id) from {table}").fetchone()[0]
    con.execute(f"insert into {table} select * from {table} where _batch_id = ? limit 1", [batch])
    con.close()
    try:
        # the batch is not gated yet: both tests see the copy
        with pytest.raises(DbtError) as err:
            run_dbt(["test"], lake=lake, build_dir=run.build_dir, select=select)
        assert sorted(name for name, _, _ in err.value.failures) == [
            "rows_match_ledger_chk_tax__taxpayer_registration_tax_taxpayer_registration",
            "unique_columns_chk_tax__taxpayer_registration__batch_id___source_file___row_number__tax_taxpayer_registration"]
        # once the batch has passed the gate, only the ledger count still sees it
        con = duckdb.connect(str(lake.duckdb_path))
        con.execute("insert into main.govlake_gated_batches values ('tax', 'taxpayer_registration', ?, 'test', now())",
                    [batch])
        con.close()
        with pytest.raises(DbtError) as err:
            run_dbt(["test"], lake=lake, build_dir=run.build_dir, select=select)
        assert [name for name, _, _ in err.value.failures] == [
            "rows_match_ledger_chk_tax__taxpayer_registration_tax_taxpayer_registration"]
    finally:
        con = duckdb.connect(str(lake.duckdb_path))
        con.execute(f"delete from {table} where rowid = (select max(rowid) from {table})")
        con.execute("delete from main.govlake_gated_batches where run_id = 'test'")
        con.close()
    ok = run_dbt(["test"], lake=lake, build_dir=run.build_dir, select="test_name:rows_match_ledger")
    tests = [n for n in ok.nodes if n["name"].startswith("rows_match_ledger_")]
    assert len(tests) == 6 and all(n["status"] == "pass" for n in tests)
