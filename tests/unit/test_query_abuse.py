"""Abuse suite for the query entry point: every forbidden form is refused, grants are enforced,
and a role below clearance never receives a clear value."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import access_support as S
from govlake import audit, masking, query
from govlake.storage import Lake

ROWS = 400


@pytest.fixture
def env(lake: Lake, tmp_path, monkeypatch):
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", "5a" * 32)
    dbt = S.write_dbt_dir(tmp_path)
    grants = S.write_grants(tmp_path)
    monkeypatch.setenv("GOVLAKE_GRANTS_FILE", str(grants))
    monkeypatch.setenv("GOVLAKE_PROJECT_ROOT", str(tmp_path))  # products.load() reads tmp dbt_project
    rows = S.people(ROWS)
    S.publish(lake, "population_base", rows)
    S.publish(lake, "marriage_household_check", [
        {"id_number": r["id_number"], "name": r["name"], "household_status_code": "20",
         "certificate_number": f"J{i:08d}"} for i, r in enumerate(rows[:100])])
    S.publish(lake, "secret_registry", [{"id_number": rows[0]["id_number"]}])
    return {"lake": lake, "dbt": dbt, "grants": grants, "rows": rows}


def run(env, sql, role="ga_analyst", purpose="人口信息核查", **kw):
    return query.run_query(role, purpose, sql, lake=env["lake"], grants_path=env["grants"],
                           dbt_dir=env["dbt"], **kw)


# Each forbidden form, with a fragment the refusal must contain (what was refused).
FORBIDDEN = [
    # file and URL readers, directly and with case / quoting tricks
    ("select * from read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM READ_CSV_AUTO('/etc/passwd')", "read_csv_auto"),
    ('select * from "read_parquet"(\'/tmp/x.parquet\')', "read_parquet"),
    ("select * from main.read_parquet('/tmp/x.parquet')", "read_parquet"),
    ("select * from read_json('https://example.invalid/x.json')", "read_json"),
    ("select * from read_text('/etc/hostname')", "read_text"),
    ("select * from read_blob('/etc/hostname')", "read_blob"),
    ("select * from GLOB('/etc/*')", "glob"),
    ("select * from parquet_metadata('/tmp/x.parquet')", "parquet_metadata"),
    ("select * from sniff_csv('/etc/passwd')", "sniff_csv"),
    ("select * from query('select 1')", "query"),
    ("select * from query_table('population_base')", "query_table"),
    ("select * from '/etc/passwd'", "/etc/passwd"),
    ('select * from "/etc/passwd"', "/etc/passwd"),
    ("select * from 'x.csv'", "x.csv"),
    ("select * from 'https://example.invalid/data.parquet'", "https://"),
    ("from '~/secrets.parquet'", "~/secrets.parquet"),
    # hidden in subqueries, CTEs, joins, lateral, set operations, scalar subqueries
    ("select * from population_base where id_number in (select column0 from read_csv('/etc/passwd'))", "read_csv"),
    ("with c as (select * from read_parquet('/tmp/x.parquet')) select * from c", "read_parquet"),
    ("with a as (select 1), b as (select * from (select * from glob('/*')) t) select * from b", "glob"),
    ("select (select count(*) from read_csv('/etc/passwd')) as n", "read_csv"),
    ("select * from population_base p join '/etc/passwd' x on true", "/etc/passwd"),
    ("select * from population_base, lateral (select * from read_text('/etc/hostname'))", "read_text"),
    ("select 1 union all select count(*) from read_csv('/etc/passwd')", "read_csv"),
    ("select * from population_base where exists (select 1 from read_csv('/etc/passwd'))", "read_csv"),
    # comments
    ("select * /* sneaky */ from /* x */ read_csv('/etc/passwd') -- trailing", "read_csv"),
    ("select 1 -- comment\n; attach '/tmp/x.db' as x", "statements"),
    ("/* leading */ ATTACH '/tmp/x.db' AS x", "ATTACH"),
    # non-SELECT statements (case tricks included)
    ("attach '/tmp/evil.duckdb' as evil", "ATTACH"),
    ("AtTaCh ':memory:' AS m", "ATTACH"),
    ("detach memory", "DETACH"),
    ("copy population_base to '/tmp/out.csv'", "COPY"),
    ("COPY (select * from population_base) TO '/tmp/out.parquet' (FORMAT parquet)", "COPY"),
    ("export database '/tmp/dump'", "EXPORT"),
    ("install httpfs", "LOAD"),
    ("load httpfs", "LOAD"),
    ("set enable_external_access = true", "SET"),
    ("SET lock_configuration = false", "SET"),
    ("reset enable_external_access", "SET"),
    ("pragma database_list", "PRAGMA"),
    ("call duckdb_settings()", "CALL"),
    ("create table t as select * from population_base", "CREATE"),
    ("create view v as select 1", "CREATE"),
    ("insert into population_base select * from population_base", "INSERT"),
    ("update population_base set name = 'x'", "UPDATE"),
    ("delete from population_base", "DELETE"),
    ("drop table population_base", "DROP"),
    ("use memory", "SET"),
    ("explain select * from population_base", "EXPLAIN"),
    ("checkpoint", "statement"),
    # second statements
    ("select 1; select 2", "2 statements"),
    ("select * from population_base; copy population_base to '/tmp/out.csv'", "2 statements"),
    ("select 1;attach '/tmp/x.db'", "2 statements"),
    # system catalogs and functions (could reveal paths or settings)
    ("select * from duckdb_settings()", "duckdb_settings"),
    ("select sql from duckdb_views()", "duckdb_views"),
    ("select * from duckdb_tables", "duckdb_tables"),
    ("select * from information_schema.tables", "information_schema"),
    ("select * from pg_catalog.pg_tables", "pg_catalog"),
    ("select * from other_db.main.population_base", "other_db"),
    ("select * from system.main.duckdb_settings", "system"),
    ("show tables", "SHOW"),
    ("select current_setting('home_directory')", "current_setting"),
    ("select CURRENT_SETTING('temp_directory')", "current_setting"),
    ("select getvariable('x')", "getvariable"),
    ("select govlake_token('id_number', '110105199001011234')", "govlake_token"),
    ("select json_serialize_sql('select 1')", "json_serialize_sql"),
    ("select * from json_execute_serialized_sql('{}')", "json_execute_serialized_sql"),
    # time travel, pivot statement, garbage
    ("select * from population_base at (version => 1)", "AT"),
    ("pivot population_base on gender_code using count(*)", "MULTI"),
    ("selec * from population_base", "unparseable"),
    ("", "empty"),
    ("   ;  ", "empty"),
]


@pytest.mark.parametrize("sql,fragment", FORBIDDEN, ids=[f"{i:02d}" for i in range(len(FORBIDDEN))])
def test_forbidden_forms_are_refused(env, sql, fragment):
    with pytest.raises(query.QueryRefused) as exc:
        run(env, sql)
    msg = str(exc.value)
    assert fragment.lower() in msg.lower(), msg
    assert exc.value.why  # every refusal says why
    last = audit.entries(env["lake"])[-1]
    assert last["kind"] == "query_refused" and last["payload"]["sql"] == sql
    assert last["payload"]["reason"] == exc.value.why


def test_allowed_forms_still_work(env):
    """The checks do not block ordinary analysis: CTEs, joins, subqueries, range(), DESCRIBE."""
    ok = [
        "select count(*) as n from population_base",
        "with c as (select division_code, count(*) n from population_base group by 1) select * from c order by 1",
        'SELECT p."name" FROM main.population_base AS p JOIN marriage_household_check m USING (id_number)',
        "select * from range(3)",
        "select * from population_base where id_number in (select id_number from marriage_household_check)",
        "describe population_base",
        "summarize select gender_code from population_base",
        "from population_base select name limit 2",
        "select 1; -- a trailing comment is fine",
    ]
    for sql in ok:
        res = run(env, sql)
        assert res.row_count >= 1, sql
    n = run(env, "select count(*) as n from population_base").table.to_pylist()[0]["n"]
    assert n == ROWS


def test_ungranted_product_refused(env):
    with pytest.raises(query.QueryRefused, match="not granted to role stats_public"):
        run(env, "select * from marriage_household_check", role="stats_public", purpose="人口统计分析")
    # hidden in a CTE / subquery too
    with pytest.raises(query.QueryRefused, match="marriage_household_check"):
        run(env, "with x as (select * from (select * from MARRIAGE_HOUSEHOLD_CHECK)) select count(*) from x",
            role="stats_public", purpose="人口统计分析")
    with pytest.raises(query.QueryRefused, match="no such product"):
        run(env, "select * from not_a_product")


def test_not_shared_product_refused_for_other_departments(env):
    with pytest.raises(query.QueryRefused, match="不予共享"):
        run(env, "select * from secret_registry", role="stats_public", purpose="人口统计分析")


def test_expired_grant_refused(env):
    with pytest.raises(query.QueryRefused, match="expired on 2020-01-01"):
        run(env, "select count(*) from population_base", role="expired_role", purpose="出生医学证明核验")
    # the same grant was valid before its expiry
    res = run(env, "select count(*) as n from population_base", role="expired_role",
              purpose="出生医学证明核验", today=dt.date(2019, 12, 31))
    assert res.table.to_pylist() == [{"n": ROWS}]


def test_unknown_role_and_wrong_purpose_refused(env):
    with pytest.raises(query.QueryRefused, match="no such role"):
        run(env, "select 1", role="nobody")
    with pytest.raises(query.QueryRefused, match="may only query for"):
        run(env, "select 1", purpose="好奇")


def test_below_clearance_never_receives_clear_values(env):
    rows = env["rows"]
    clear = {c: {str(r[c]) for r in rows} for c in ("id_number", "name", "phone", "address", "birth_date")}
    # L2 民政 role: id_number tokenized, name/phone/address/birth_date masked
    res = run(env, "select * from population_base", role="mz_analyst", purpose="婚姻登记核验", limit=ROWS)
    got = res.table.to_pylist()
    assert len(got) == ROWS
    for col in clear:
        values = [g[col] for g in got]
        leaked = clear[col] & set(values)
        assert not leaked, f"{col}: clear values reached mz_analyst: {sorted(leaked)[:3]}"
        assert all(v is not None for v in values)
    # not even inside another column or a derived expression
    for g in got:
        blob = "|".join(str(v) for v in g.values())
        assert not any(idn in blob for idn in (g["id_number"],) if idn in clear["id_number"])
    ids = [g["id_number"] for g in got]
    assert all(i.startswith(("v1:", "v1sm3:")) for i in ids) and len(set(ids)) == ROWS
    assert res.treatments["population_base"]["id_number"] == "token"
    # derived expressions only see masked data: substrings of clear IDs cannot be rebuilt
    res2 = run(env, "select substr(id_number, 1, 18) s, name || '' n, phone p, "
               "upper(address) a from population_base", role="mz_analyst", purpose="婚姻登记核验",
               limit=ROWS)
    for g in res2.table.to_pylist():
        assert g["s"] not in clear["id_number"] and g["n"] not in clear["name"]
        assert g["p"] not in clear["phone"] and g["a"] not in clear["address"]
    # masks follow docs/standards.md §6 (outside the owning department: ID keeps 1 + 1)
    res3 = run(env, "select id_number, name, phone, address from population_base", role="stats_public",
               purpose="人口统计分析", limit=ROWS)
    by_phone_suffix = {}
    for src, g in zip(rows, res3.table.to_pylist()):
        assert g["id_number"] == src["id_number"][0] + "*" * 16 + src["id_number"][-1]
        assert g["phone"] == src["phone"][:3] + "****" + src["phone"][-4:]
        assert g["address"].endswith("****") and g["address"] != src["address"]
        assert g["name"][0] == src["name"][0] and "*" in g["name"]
        by_phone_suffix[g["phone"]] = True
    # the L4 公安 role gets clear values (the control: masking is by clearance, not by accident)
    res4 = run(env, "select id_number, name from population_base", limit=ROWS)
    assert {g["id_number"] for g in res4.table.to_pylist()} == clear["id_number"]


def test_tokens_join_across_products_without_clear_ids(env):
    res = run(env, "select count(*) as n from population_base p join marriage_household_check m "
               "on p.id_number = m.id_number", role="mz_analyst", purpose="婚姻登记核验")
    assert res.table.to_pylist() == [{"n": 100}]
    res = run(env, "select certificate_number from marriage_household_check", role="mz_analyst",
              purpose="婚姻登记核验")
    assert all(r["certificate_number"] is None for r in res.table.to_pylist())


def test_default_row_limit_and_truncation(env, monkeypatch):
    monkeypatch.setattr(query, "DEFAULT_LIMIT", 50)
    res = query.run_query("ga_analyst", "人口信息核查", "select * from population_base",
                          lake=env["lake"], grants_path=env["grants"], dbt_dir=env["dbt"], limit=None)
    assert res.row_count == 50 and res.truncated
    res = run(env, "select * from population_base", limit=10)
    assert res.row_count == 10 and res.truncated
    assert audit.entries(env["lake"])[-1]["payload"]["truncated"] is True
    res = run(env, "select * from population_base", limit=ROWS)
    assert res.row_count == ROWS and not res.truncated


def test_engine_is_locked_even_if_the_parser_check_were_bypassed(env, tmp_path):
    """Defence in depth: the connection itself refuses file access and config changes."""
    con = duckdb.connect()
    query._lock_down(con)
    f = next(env["lake"].current_dir("population_base").glob("*.parquet"))
    for sql in (f"select * from read_parquet('{f}')", f"select * from '{f}'",
                f"attach '{tmp_path / 'x.duckdb'}' as x", f"copy (select 1) to '{tmp_path / 'o.csv'}'",
                "set enable_external_access = true", "set lock_configuration = false",
                "load httpfs"):
        with pytest.raises(duckdb.Error):
            con.execute(sql).fetchall()
    con.close()


def test_query_engine_holds_no_clear_value_or_path(env, monkeypatch):
    """The masked tables are the only data in the connection; their definitions hold no path."""
    seen = {}
    real = query._lock_down

    def spy(con):
        real(con)
        seen["sql"] = con.execute("select sql from duckdb_tables()").fetchall()
        seen["ids"] = [r[0] for r in con.execute("select id_number from population_base").fetchall()]

    monkeypatch.setattr(query, "_lock_down", spy)
    run(env, "select count(*) from population_base", role="stats_public", purpose="人口统计分析")
    assert str(env["lake"].root) not in repr(seen["sql"])
    clear = {r["id_number"] for r in env["rows"]}
    assert len(seen["ids"]) == ROWS and not clear & set(seen["ids"])


# `govlake query` is a client of the sharing service: tested against a real server in
# tests/integration/test_sharing_service.py::test_cli_access_session


def test_runaway_query_is_interrupted_and_audited(env):
    with pytest.raises(query.QueryFailed, match="timed out"):
        run(env, "select count(*) from range(1000000000000) a", timeout=0.5)
    last = audit.entries(env["lake"])[-1]
    assert last["kind"] == "query" and last["payload"]["status"] == "error"
    assert "timed out" in last["payload"]["error"]
