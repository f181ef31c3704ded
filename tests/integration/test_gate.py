"""The GX gate on real Parquet candidates (made with DuckDB), through GX's SQL engine on DuckDB."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

from govlake import gate
from govlake.publish import gate_and_publish

pytestmark = pytest.mark.integration

RUN = "20261124T101500-ab12cd"

_POPULATION = """
select i,
       '110105' || strftime(date '1950-01-01' + (i % 20000)::int, '%Y%m%d')
           || lpad((i // 20000)::varchar, 3, '0') || (i % 10)::varchar as id_number,
       '张三' || i::varchar as name,
       case when i % 2 = 0 then '1' else '2' end as gender_code,
       date '1950-01-01' + (i % 20000)::int as birth_date,
       '01' as ethnicity_code, '110105' as division_code, '北京市朝阳区' as address,
       case when i % 3 = 0 then '20' else '10' end as marital_status_code,
       case when i % 5 = 0 then null else '138' || lpad(i::varchar, 8, '0') end as phone,
       true as in_household_registration, 'public_security' as known_by,
       1 + (i % 6)::int as department_count
from range(500) t(i)
"""


def population(replace: str = "", duplicate_row: int | None = None, exclude: str = "") -> str:
    """500 valid people; ``replace`` = DuckDB ``REPLACE`` items (may use ``i``, the row index)."""
    excl = "i" + (f", {exclude}" if exclude else "")
    sql = f"select * exclude ({excl}) {f'replace ({replace})' if replace else ''} from ({_POPULATION})"
    if duplicate_row is not None:
        sql += f" union all select * exclude ({excl}) from ({_POPULATION}) where i = {duplicate_row}"
    return sql


GOOD_POPULATION = population()


def write(path: Path, sql: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"copy ({sql}) to '{path}' (format parquet)")
    finally:
        con.close()
    return path


@pytest.fixture
def good_population(lake) -> Path:
    return write(lake.candidate(RUN) / "population_base.parquet", GOOD_POPULATION)


def failed_types(result: gate.GateResult, model: str = "population_base") -> dict[str, str | None]:
    return {f.type + ":" + str(f.column): f for f in result.suite_results[model].failed}


def test_passing_table_passes_and_writes_offline_docs(lake, good_population):
    res = gate.validate(lake, "shared", {"population_base": good_population}, RUN)
    assert res.success, res.failure_message()
    sr = res.suite_results["population_base"]
    assert sr.suite == "shared.population_base" and sr.row_count == 500
    assert sr.evaluated == len(gate.load_suite_json("shared", "population_base")["expectations"])
    gate.check(res)  # does not raise
    # reports are kept under <lake>/reports/<run_id>/<layer>/
    assert res.report_path.parent == lake.reports_root / RUN / "shared"
    assert res.docs_path.is_file() and res.report_path.is_file() and res.json_path.is_file()
    assert json.loads(res.json_path.read_text(encoding="utf-8"))["success"] is True
    page = Path(sr.docs_page)
    assert page.is_file() and "population_base" in page.read_text(encoding="utf-8")
    htmls = list(res.docs_path.parent.rglob("*.html")) + [res.report_path]
    assert len(htmls) >= 3
    for h in htmls:
        text = h.read_text(encoding="utf-8")
        assert not gate.REMOTE_ASSET_RE.search(text), f"{h} references a remote asset"
        for needle in ("cdn.", "unpkg.com", "bootstrapcdn", "code.jquery.com", "amazonaws.com"):
            assert needle not in text, f"{h} still mentions {needle}"
    for css in res.docs_path.parent.rglob("*.css"):
        assert not gate.REMOTE_ASSET_RE.search(css.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name, sql, expected", [
    ("badregex", population("case when i = 7 then '11010519500101007' else id_number end as id_number"),
     "expect_column_values_to_match_regex:id_number"),
    ("nullkey", population("case when i = 7 then null else id_number end as id_number"),
     "expect_column_values_to_not_be_null:id_number"),
    ("dupkey", population(duplicate_row=7), "expect_column_values_to_be_unique:id_number"),
    ("badset", population("case when i = 7 then '24' else marital_status_code end as marital_status_code"),
     "expect_column_values_to_be_in_set:marital_status_code"),
    ("future", population("case when i = 7 then current_date + 1 else birth_date end as birth_date"),
     "expect_column_values_to_be_between:birth_date"),
    ("badcount", population("case when i = 7 then 7 else department_count end as department_count"),
     "expect_column_values_to_be_between:department_count"),
])
def test_injected_bad_row_fails_the_named_expectation(lake, name, sql, expected):
    path = write(lake.candidate(RUN + name) / "population_base.parquet", sql)
    res = gate.validate(lake, "shared", {"population_base": path}, RUN + name)
    assert not res.success
    failed = failed_types(res)
    assert list(failed) == [expected], res.failure_message()
    f = failed[expected]
    assert f.unexpected_count in (1, 2) and f.exception is None
    with pytest.raises(gate.GateFailed) as ei:
        res.raise_for_failure("population_base")
    msg = str(ei.value)
    assert "population_base" in msg and "shared.population_base" in msg
    assert expected.replace(":", "(") + ")" in msg
    report = res.report_path.read_text(encoding="utf-8")
    assert "FAILED" in report and expected.split(":")[0] in report


def test_missing_column_is_a_failure_not_a_pass(lake):
    path = write(lake.candidate(RUN) / "population_base.parquet",
                 population(exclude="department_count"))
    res = gate.validate(lake, "shared", {"population_base": path}, RUN)
    assert not res.success
    types = {f.type for f in res.suite_results["population_base"].failed}
    assert "expect_table_columns_to_match_set" in types


def test_missing_suite_or_candidate_is_an_error(lake, good_population):
    with pytest.raises(gate.GateError, match="no reviewed suite"):
        gate.validate(lake, "shared", {"no_such_product": good_population}, RUN)
    with pytest.raises(gate.GateError, match="does not exist"):
        gate.validate(lake, "shared", {"population_base": good_population.with_name("x.parquet")}, RUN)


def test_gate_and_publish_failed_gate_keeps_current_candidate_and_report(lake, good_population):
    pub = gate_and_publish(lake, "population_base", good_population, run_id=RUN,
                           inputs=[{"batch_id": "b1", "file": "hr.csv", "sha256": "a" * 64}])
    assert int(pub) == 1 and lake.current_version("population_base") == 1
    assert lake.manifest("population_base")["gate"]["docs_path"].endswith("index.html")

    bad_run = "20261125T101500-ffffff"
    bad = write(lake.candidate(bad_run) / "population_base.parquet",
                population("'X' || id_number as id_number"))
    with pytest.raises(gate.GateFailed) as ei:
        gate_and_publish(lake, "population_base", bad, run_id=bad_run, inputs=[])
    msg = str(ei.value)
    assert "product population_base" in msg and "suite shared.population_base" in msg
    assert "expect_column_values_to_match_regex(id_number)" in msg
    assert lake.current_version("population_base") == 1 and lake.versions("population_base") == [1]
    assert bad.is_file()
    assert (lake.report_dir(bad_run, "shared") / "report.html").is_file()
    assert (lake.report_dir(bad_run, "shared") / "data_docs" / "index.html").is_file()


def test_standardized_layer_multiple_models_in_one_run(lake):
    from govlake import metadata

    d = metadata.dataset("tax", "taxpayer_registration")
    cols = ", ".join(f"null::varchar as {c.element}" for c in d.columns
                     if c.element not in ("uscc", "taxpayer_name", "registration_date"))
    sql = (f"select '91350200MA2YJ1XR9G' as uscc, '某某公司' as taxpayer_name, "
           f"date '2020-01-02' as registration_date, {cols}, 'b1' as _batch_id, 'f.csv' as _source_file, "
           f"repeat('a', 64) as _source_sha256, i as _row_number, date '2026-11-24' as _delivery_date "
           f"from range(3) t(i)")
    tax = write(lake.candidate(RUN) / "stg_tax__taxpayer_registration.parquet", sql)
    q = write(lake.candidate(RUN) / "quarantine_rows.parquet",
              "select 'tax' as dept, 'taxpayer_registration' as dataset, 'b1' as _batch_id, "
              "'f.csv' as _source_file, 9 as _row_number, 'uscc.check_char' as rule, 'uscc' as column, "
              "'91350200MA2YJ1XR9A' as original_value, 'MOD 31 check character' as message")
    res = gate.validate(lake, "standardized",
                        {"stg_tax__taxpayer_registration": tax, "quarantine_rows": q}, RUN)
    assert res.success, res.failure_message()
    assert set(res.suite_results) == {"stg_tax__taxpayer_registration", "quarantine_rows"}
