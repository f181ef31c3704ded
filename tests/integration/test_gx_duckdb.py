"""The GX-on-DuckDB compatibility shim itself: if a GX upgrade breaks it, these fail."""

from __future__ import annotations

import great_expectations as gx
import pytest
import sqlalchemy as sa

from govlake import gx_duckdb

pytestmark = pytest.mark.integration


def test_unpatched_duckdb_engine_loses_results():
    """The upstream bug the shim exists for: a result read after its connection closed is empty.
    If this starts passing, duckdb-engine/SQLAlchemy changed and the shim may be removable."""
    engine = sa.create_engine("duckdb:///:memory:")
    with engine.connect() as conn:
        res = conn.execute(sa.text("select 42"))
    assert res.fetchall() == []


def test_shim_is_pinned_to_the_tested_gx_version():
    assert gx.__version__.startswith(gx_duckdb.SUPPORTED_GX)
    patched = gx_duckdb.install()
    assert gx_duckdb.install() == patched  # idempotent
    for name in ("column_values_match_regex", "column_values_not_match_regex",
                 "column_values_match_regex_list"):
        assert any(m.endswith(name) for m in patched), name


def _validate(sql: str, expectations):
    gx_duckdb.install()
    ctx = gx.get_context(mode="ephemeral")
    ds = ctx.data_sources.add_sql(name="d", connection_string=gx_duckdb.connection_string(),
                                  kwargs=gx_duckdb.engine_kwargs(threads=1))
    batch = ds.add_query_asset(name="q", query=sql).add_batch_definition_whole_table("b").get_batch()
    res = batch.validate(gx.ExpectationSuite(name="s", expectations=expectations))
    ds.get_execution_engine().close()
    return res.results


def test_metrics_are_read_before_the_connection_closes():
    r = _validate("select i, i % 3 as m from range(10) t(i)", [
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=10, max_value=10),
        gx.expectations.ExpectColumnMaxToBeBetween(column="i", min_value=9, max_value=9),
        gx.expectations.ExpectColumnValuesToBeUnique(column="i"),
        gx.expectations.ExpectColumnValuesToBeUnique(column="m"),
    ])
    assert [x.success for x in r] == [True, True, True, False], [x.exception_info for x in r]
    assert r[0].result["observed_value"] == 10
    assert r[3].result["unexpected_count"] == 10


def test_regex_uses_search_semantics_like_gx_pandas():
    # re.search semantics: an unanchored pattern matches anywhere in the value
    r = _validate("select * from (values ('ab12'), ('12ab'), ('abc'), (null)) t(s)", [
        gx.expectations.ExpectColumnValuesToMatchRegex(column="s", regex=r"\d"),
        gx.expectations.ExpectColumnValuesToMatchRegex(column="s", regex=r"^\d"),
        gx.expectations.ExpectColumnValuesToNotMatchRegex(column="s", regex=r"c$"),
        gx.expectations.ExpectColumnValuesToMatchRegexList(column="s", regex_list=[r"^a", r"^1"]),
    ])
    assert not any(x.exception_info.get("raised_exception") for x in r
                   if x.exception_info and "raised_exception" in x.exception_info)
    assert [x.result["unexpected_count"] for x in r] == [1, 2, 1, 0]
    assert r[0].result["partial_unexpected_list"] == ["abc"]
    assert sorted(r[1].result["partial_unexpected_list"]) == ["ab12", "abc"]


def test_other_dialects_are_untouched():
    from great_expectations.expectations.metrics.column_map_metrics import column_values_match_regex as m

    gx_duckdb.install()
    import sqlalchemy.dialects.sqlite as sqlite_module  # what GX passes for SQLite

    expr = m.get_dialect_regex_expression(sa.column("x"), "a", sqlite_module)
    sql = str(expr.compile(dialect=sqlite_module.dialect())).lower()
    # the sqlite branch of GX itself (REGEXP operator), not DuckDB's function
    assert "regexp" in sql and "regexp_matches" not in sql
