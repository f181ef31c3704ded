"""Masked renditions (govlake.sharing.renditions) equal today's per-query masking value for value.

Each test builds a real Parquet product, a real rendition with DuckDB, and compares every cell
with ``masking.mask`` / ``masking.token`` computed in Python.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import access_support as S
from govlake import grants, masking, products
from govlake.grants import ColumnPlan
from govlake.sharing import crypto
from govlake.sharing import renditions as R
from lake_support import passed_gate

KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)

# realistic and awkward values: 15- and 18-digit IDs, full-width digits, +86 phones, NULLs, ""
ROWS = [
    {"id_number": "11010519491231002X", "name": "张三", "phone": "13812345678",
     "address": "北京市朝阳区建国路88号", "birth_date": "1949-12-31", "email": "zhang@example.cn",
     "bank_card": "6222021234567890123", "uscc": "91110000600037341L", "note": "abcd", "n": 1},
    {"id_number": "110105491231002", "name": "欧阳娜娜", "phone": "+86 138-1234-5678",
     "address": "浙江省杭州市西湖区文三路100号", "birth_date": "１９９０-01-01", "email": "@x.cn",
     "bank_card": "６２２２０２１２３４５６７８９０", "uscc": "91330106mA2abcde1x", "note": "ab", "n": 2},
    {"id_number": "１１０１０５１９４９１２３１００２ｘ", "name": " 王 ", "phone": "（0086）13812345678",
     "address": "广西壮族自治区南宁市青秀区民族大道1号", "birth_date": "unknown", "email": "a@b@c.cn",
     "bank_card": "", "uscc": "", "note": "", "n": 3},
    {"id_number": None, "name": None, "phone": None, "address": None, "birth_date": None,
     "email": None, "bank_card": None, "uscc": None, "note": None, "n": None},
    {"id_number": "", "name": "", "phone": "", "address": "", "birth_date": "", "email": "",
     "bank_card": "1234", "uscc": "9111", "note": "x", "n": 0},
    {"id_number": " 32058319850101001x ", "name": "阿卜杜拉·艾山", "phone": "86 13912345678",
     "address": "内蒙古自治区呼和浩特市新城区1栋", "birth_date": " 2001-02-03 ", "email": "z\u3000@d",
     "bank_card": "6222 0212 3456 7890", "uscc": "９１１１", "note": "中文长一点的值", "n": 5},
    {"id_number": "12345", "name": "李", "phone": "12", "address": "上海市浦东新区", "birth_date": "2001",
     "email": "plain", "bank_card": "62", "uscc": "x", "note": "abc", "n": 6},
]
ELEMENTS = {"id_number": "id_number", "name": "name", "phone": "phone", "address": "address",
            "birth_date": "birth_date", "email": "email", "bank_card": "bank_card", "uscc": "uscc",
            "note": "", "n": "count"}


def write_product(path, rows=ROWS):
    table = pa.Table.from_pylist(rows, schema=pa.schema(
        [(c, pa.int64() if c == "n" else pa.string()) for c in rows[0]]))
    pq.write_table(table, path)
    return table


def plan_all(treatment: str) -> list[ColumnPlan]:
    return [ColumnPlan(c, e, "L4", treatment) for c, e in ELEMENTS.items()]


def expected(plan, rows, internal, key):
    out = []
    for row in rows:
        o = {}
        for c in plan:
            v = row[c.column]
            s = None if v is None else str(v)
            if c.treatment == "clear":
                o[c.column] = v
            elif c.treatment == "withhold":
                o[c.column] = None
            elif c.treatment == "mask":
                o[c.column] = masking.mask(c.element, s, internal)
            else:
                o[c.column] = masking.token(c.element or c.column, s, key, "sha256")
        out.append(o)
    return out


def read_rows(path):
    return pq.read_table(path, **crypto.arrow_read_options(path)).to_pylist()


@pytest.mark.parametrize("treatment", ["clear", "mask", "token", "withhold"])
@pytest.mark.parametrize("internal", [True, False])
def test_every_cell_equals_per_query_masking(tmp_path, treatment, internal):
    src = tmp_path / "p.parquet"
    write_product(src)
    plan = plan_all(treatment)
    dest = tmp_path / "r.parquet"
    info = R.build(src, dest, plan, internal, KEY)
    got = read_rows(dest)
    assert info["rows"] == len(ROWS) == len(got)
    assert got == expected(plan, ROWS, internal, KEY)


def test_mixed_plan_matches_the_query_path_udfs(tmp_path):
    """Same values as the per-query path itself: column_sql + register_udfs in DuckDB."""
    src = tmp_path / "p.parquet"
    write_product(src)
    treatments = ["mask", "token", "clear", "withhold", "mask", "mask", "token", "mask", "mask", "token"]
    plan = [ColumnPlan(c, e, "L3", t) for (c, e), t in zip(ELEMENTS.items(), treatments)]
    for internal in (True, False):
        dest = tmp_path / f"r{internal}.parquet"
        R.build(src, dest, plan, internal, KEY)
        con = duckdb.connect()
        masking.register_udfs(con, KEY, "sha256")
        exprs = ", ".join(masking.column_sql(c.column, c.element, c.treatment, internal) for c in plan)
        cur = con.execute(f"SELECT {exprs} FROM read_parquet('{src}')")
        names = [d[0] for d in cur.description]
        want = [dict(zip(names, r)) for r in cur.fetchall()]
        assert read_rows(dest) == want
    # spot checks a reader would make
    rows = read_rows(tmp_path / "rTrue.parquet")
    assert rows[0]["id_number"] == "110105********002X"
    assert rows[2]["id_number"] == "110105********002X"  # full-width + lower-case x
    assert rows[1]["name"] == masking.token("name", "欧阳娜娜", KEY)
    assert rows[1]["bank_card"] == masking.token("bank_card", "62220212345678 90".replace(" ", ""), KEY)
    assert rows[1]["phone"] == "+86 138-1234-5678"  # clear stays as it is
    assert rows[0]["address"] is None  # withheld
    assert rows[1]["birth_date"] == "１９９０-**-**"
    assert rows[3]["id_number"] is None and rows[3]["name"] is None
    ext = read_rows(tmp_path / "rFalse.parquet")
    assert ext[0]["id_number"] == "1****************X"


def test_tokens_equal_masking_token_and_15_digit_ids_join_their_18_digit_form(tmp_path):
    ids = ["110105491231002", "11010519491231002X", "１１０１０５１９４９１２３１００２Ｘ", " 11010519491231002x"]
    src = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id_number": ids}), src)
    dest = tmp_path / "r.parquet"
    R.build(src, dest, [ColumnPlan("id_number", "id_number", "L4", "token")], False, KEY)
    got = [r["id_number"] for r in read_rows(dest)]
    assert got == [masking.token("id_number", v, KEY, "sha256") for v in ids]
    assert len(set(got)) == 1 and got[0].startswith("v1:") and len(got[0]) == 3 + 64
    # 15-digit IDs whose upgrade needs every check digit 0-9 and X join their 18-digit form
    full = [r["id_number"] for r in S.people(400) if r["id_number"][6:8] == "19"]
    assert {i[17] for i in full} == set("0123456789X")
    short = [i[:6] + i[8:17] for i in full]
    pq.write_table(pa.table({"id_number": short}), src)
    R.build(src, tmp_path / "r15.parquet", [ColumnPlan("id_number", "id_number", "L4", "token")], False, KEY)
    assert [r["id_number"] for r in read_rows(tmp_path / "r15.parquet")] == \
        [masking.token("id_number", i, KEY) for i in full]


def test_long_key_is_hashed_like_hmac(tmp_path):
    key = bytes(range(100))  # > 64 bytes: HMAC hashes the key first
    src = tmp_path / "p.parquet"
    write_product(src)
    plan = plan_all("token")
    R.build(src, tmp_path / "r.parquet", plan, True, key)
    assert read_rows(tmp_path / "r.parquet") == expected(plan, ROWS, True, key)


def test_row_order_and_count_preserved_over_many_row_groups(tmp_path):
    n = 300_000
    src = tmp_path / "p.parquet"
    pq.write_table(pa.table({"seq": pa.array(range(n), pa.int64()),
                             "phone": [f"13{i:09d}" for i in range(n)]}), src, row_group_size=50_000)
    dest = tmp_path / "r.parquet"
    plan = [ColumnPlan("seq", "count", "L1", "clear"), ColumnPlan("phone", "phone", "L3", "mask")]
    R.build(src, dest, plan, False, None)
    t = pq.read_table(dest)
    assert t.column("seq").to_pylist() == list(range(n))
    assert t.column("phone")[123_456].as_py() == masking.mask_phone(f"13{123_456:09d}")
    md = pq.ParquetFile(dest).metadata
    assert md.num_row_groups >= 2  # row groups small enough for pushdown
    col = md.row_group(0).column(0)
    assert col.compression == "ZSTD" and col.statistics is not None and col.statistics.has_min_max
    assert stat.S_IMODE(os.stat(dest).st_mode) & 0o337 == 0  # 0440 or stricter


def test_value_outside_the_verified_nfkc_set_stops_the_build_naming_file_row_rule(tmp_path):
    src = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id_number": ["11010519491231002X", "110105\u2460949"]}), src)  # ① → 1
    dest = tmp_path / "r.parquet"
    with pytest.raises(R.RenditionError) as e:
        R.build(src, dest, [ColumnPlan("id_number", "id_number", "L4", "mask")], True, None)
    msg = str(e.value)
    assert str(src) in msg and "row 2" in msg and "'id_number'" in msg and "U+2460" in msg
    assert not dest.exists() and not list(tmp_path.glob(".*tmp"))
    # a name mask does not need NFKC: the same character goes through
    pq.write_table(pa.table({"name": ["张\u2460"]}), src)
    R.build(src, dest, [ColumnPlan("name", "name", "L3", "mask")], True, None)
    assert read_rows(dest) == [{"name": "张*"}]


def test_token_plan_without_key_is_refused(tmp_path):
    src = tmp_path / "p.parquet"
    write_product(src)
    with pytest.raises(R.RenditionError, match="no key"):
        R.build(src, tmp_path / "r.parquet", plan_all("token"), True, None)


# ---- the mask functions over random strings ---------------------------------------------------
_ALPHABET = st.sampled_from(list("0123456789xX+-()（）@ \t\u3000\u00a0１２Ｘ省市区县自治州旗张王欧阳·é\u0301😀\n北京朝阳号路"))
_TEXT = st.lists(_ALPHABET, max_size=24).map("".join) | st.text(max_size=20)
_MASK_ELEMENTS = sorted(set(masking.MASKERS) | {"other"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TEXT, min_size=1, max_size=40), st.booleans())
def test_mask_sql_equals_python_on_random_strings(values, internal):
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, v VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    for element in _MASK_ELEMENTS:
        q = R.mask_sql(element, "v", internal, "t", carry=("i", "v"))
        rows = con.execute(f"SELECT v, out FROM ({q}) ORDER BY i").fetchall()
        for v, got in rows:
            if element in R.NFKC_MASKS and not R.nfkc_safe(v):
                continue  # such values stop the build (test above)
            assert got == masking.mask(element, v, internal), (element, v)


@settings(max_examples=40, deadline=None)
@given(st.lists(_TEXT, min_size=1, max_size=30))
def test_token_sql_equals_masking_token_on_random_strings(values):
    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE __k (ipad BLOB, opad BLOB)")
    con.execute("INSERT INTO __k VALUES (?, ?)", list(R._pads(KEY)))
    con.execute("CREATE TABLE t (i INTEGER, v VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    for element in ("id_number", "phone", "uscc", "name"):
        q = R.token_sql(element, "v", "t", carry=("i", "v"))
        rows = con.execute(f"SELECT v, out FROM ({q}) ORDER BY i").fetchall()
        for v, got in rows:
            if R.nfkc_safe(v):
                assert got == masking.token(element, v, KEY, "sha256"), (element, v)


def test_sql_classes_match_pythons_re():
    """RE2 classes built from str.isspace / str.isdecimal are Python re's \\s and \\d."""
    import re
    import sys
    ws, dg = re.compile(r"\s"), re.compile(r"\d")
    for cp in range(0, sys.maxunicode + 1, 1):
        c = chr(cp)
        assert bool(ws.match(c)) == c.isspace(), hex(cp)
        assert bool(dg.match(c)) == c.isdecimal(), hex(cp)


# ---- ids, plans, ensure -----------------------------------------------------------------------
def test_rendition_id_is_deterministic_and_separates_what_matters():
    p = plan_all("mask")
    assert R.rendition_id(p, True) == R.rendition_id(list(reversed(p)), True)
    assert len(R.rendition_id(p, True)) == 16
    assert R.rendition_id(p, True) != R.rendition_id(p, False)  # id_number mask 6+4 vs 1+1
    only_name = [ColumnPlan("name", "name", "L3", "mask")]
    assert R.rendition_id(only_name, True) == R.rendition_id(only_name, False)  # same values
    t = plan_all("token")
    assert R.rendition_id(t, True, "k1") != R.rendition_id(t, True, "k2")
    with pytest.raises(R.RenditionError):
        R.rendition_id(t, True)


@pytest.fixture
def env(tmp_path, lake, monkeypatch):
    dbt = S.write_dbt_dir(tmp_path)
    monkeypatch.setenv("GOVLAKE_GRANTS_FILE", str(S.write_grants(tmp_path)))
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", KEY.hex())
    return lake, products.load(dbt), grants.load()


def test_needed_plans_one_per_distinct_treatment_vector(env):
    lake, meta, roles = env
    cols = [c.name for c in meta["population_base"].columns]
    needs = R.needed_plans("population_base", meta["population_base"], roles, cols)
    by_role = {r: n for n in needs for r in n.roles}
    assert set(by_role) == {"ga_analyst", "mz_analyst", "stats_public"}  # expired_role excluded
    assert by_role["ga_analyst"].internal and all(c.treatment == "clear" for c in by_role["ga_analyst"].plan)
    mz = {c.column: c.treatment for c in by_role["mz_analyst"].plan}
    assert mz["id_number"] == "token" and mz["name"] == "mask" and mz["gender_code"] == "clear"
    # 不予共享: only the owner department
    sec = R.needed_plans("secret_registry", meta["secret_registry"], roles)
    assert [n.roles for n in sec] == []
    # the same treatment vector for two roles is one rendition
    twin = dict(roles, stats_twin=dataclasses.replace(roles["stats_public"], name="stats_twin",
                                                      department="财政"))
    needs2 = R.needed_plans("population_base", meta["population_base"], twin, cols)
    assert len(needs2) == len(needs) and any(set(n.roles) == {"stats_public", "stats_twin"} for n in needs2)


def test_ensure_builds_once_under_a_lock_and_reuses(env):
    lake, meta, roles = env
    rows = S.people(200)
    S.publish(lake, "population_base", rows)
    cols = list(rows[0])
    plan, internal = R.plan_for(roles["mz_analyst"], meta["population_base"], "population_base", cols)
    paths, errors = [], []

    def go():
        try:
            paths.append(R.ensure(lake, "population_base", 1, plan, internal, KEY))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1
    path = paths[0]
    rid = R.rendition_id(plan, internal, masking.key_id(KEY))
    assert path == lake.version_dir("population_base", 1) / "renditions" / f"{rid}.parquet"
    mtime = path.stat().st_mtime_ns
    assert R.ensure(lake, "population_base", 1, plan, internal, KEY) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    got = read_rows(path)
    assert got == expected(plan, rows, internal, KEY)  # same order, same values
    side = json.loads((path.parent / f"{rid}.json").read_text(encoding="utf-8"))
    assert side["rows"] == 200 and side["plan"]["token_key_id"] == masking.key_id(KEY)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_ensure_for_a_subset_of_columns(env):
    """A grant that covers some columns only: the rendition has exactly those columns."""
    lake, meta, roles = env
    rows = S.people(20)
    S.publish(lake, "population_base", rows)
    plan = roles["stats_public"].plan(meta["population_base"], "population_base",
                                      ["name", "division_code"])
    path = R.ensure(lake, "population_base", 1, plan, False, None)
    t = pq.read_table(path)
    assert t.column_names == ["name", "division_code"]
    assert t.column("name").to_pylist() == [masking.mask_name(r["name"]) for r in rows]


def test_ensure_on_a_missing_version_names_it(env):
    lake, *_ = env
    with pytest.raises(R.RenditionError, match="no published version"):
        R.ensure(lake, "population_base", 7, plan_all("mask"), True, None)


# ---- the publish hook -------------------------------------------------------------------------
def _publish(lake, rows, run_id="20261124T101500-ab12cd", **kw):
    from govlake.publish import publish

    cand = lake.candidate(run_id) / "population_base.parquet"
    cand.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), cand)
    gr = passed_gate(lake, run_id, "population_base", cand, len(rows))
    return publish(lake, "population_base", cand, run_id=run_id, gate_result=gr, inputs=[], **kw)


@pytest.fixture
def pub_env(tmp_path, lake, monkeypatch):
    dbt = S.write_dbt_dir(tmp_path)
    monkeypatch.setattr(products, "load", lambda dbt_dir=None, files=None, _l=products.load: _l(dbt))
    monkeypatch.setenv("GOVLAKE_GRANTS_FILE", str(S.write_grants(tmp_path)))
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", KEY.hex())
    return lake


def test_publish_builds_listed_immutable_renditions_that_ensure_reuses(pub_env):
    from govlake.storage import sha256_file

    lake = pub_env
    rows = S.people(300)
    v = _publish(lake, rows)
    m = lake.manifest("population_base", v)
    meta = products.load()["population_base"]
    roles = grants.load()
    # ga_analyst reads everything in clear (the data file itself): no rendition for it
    assert {tuple(r["roles"]) for r in m["renditions"]} == {("mz_analyst",), ("stats_public",)}
    assert m["renditions_skipped"] == []
    for entry in m["renditions"]:
        path = lake.version_dir("population_base", v) / entry["path"]
        assert sha256_file(path) == entry["sha256"] and entry["rows"] == 300
        assert stat.S_IMODE(path.stat().st_mode) == 0o440
        role = roles[entry["roles"][0]]
        plan, internal = R.plan_for(role, meta, "population_base", list(rows[0]))
        assert entry["id"] == R.rendition_id(plan, internal, masking.key_id(KEY))
        assert read_rows(path) == expected(plan, rows, internal, KEY)
        mtime = path.stat().st_mtime_ns
        assert R.ensure(lake, "population_base", v, plan, internal, KEY) == path  # reused
        assert path.stat().st_mtime_ns == mtime
    assert not (stat.S_IMODE((path.parent).stat().st_mode) & 0o222)


def test_publish_without_key_skips_token_renditions_and_ensure_builds_them_later(pub_env, monkeypatch):
    lake = pub_env
    monkeypatch.delenv("GOVLAKE_TOKEN_KEY")
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY_FILE", str(lake.root / "no-such.key"))
    rows = S.people(50)
    v = _publish(lake, rows)
    m = lake.manifest("population_base", v)
    assert [tuple(r["roles"]) for r in m["renditions"]] == [("stats_public",)]
    assert [s["roles"] for s in m["renditions_skipped"]] == [["mz_analyst"]]
    assert m["renditions_skipped"][0]["reason"] == "no join-token key"
    # later, with the key, the sharing service builds it on demand
    roles = grants.load()
    plan, internal = R.plan_for(roles["mz_analyst"], products.load()["population_base"],
                                "population_base", list(rows[0]))
    path = R.ensure(lake, "population_base", v, plan, internal, KEY)
    assert [r["id_number"] for r in read_rows(path)] == [masking.token("id_number", r["id_number"], KEY)
                                                          for r in rows]


def test_publish_renditions_off(pub_env):
    lake = pub_env
    v = _publish(lake, S.people(10), renditions=False)
    assert "renditions" not in lake.manifest("population_base", v)
    assert not (lake.version_dir("population_base", v) / "renditions").exists()


def test_publish_lists_a_rendition_it_cannot_make_exactly_as_skipped(pub_env):
    lake = pub_env
    rows = S.people(5)
    rows[3]["phone"] = "138\u246012345678"  # ① : NFKC would make it a digit
    v = _publish(lake, rows)
    m = lake.manifest("population_base", v)
    assert m["renditions"] == []  # both mz_analyst (L2) and stats_public (L1) mask the phone
    assert sorted(r for s in m["renditions_skipped"] for r in s["roles"]) == ["mz_analyst", "stats_public"]
    for skip in m["renditions_skipped"]:
        assert "row 4" in skip["reason"] and "'phone'" in skip["reason"] and "U+2460" in skip["reason"]
    assert lake.current_version("population_base") == v
