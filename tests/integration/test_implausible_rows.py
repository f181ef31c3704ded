"""Implausible values are quarantined row by row, each with its own rule, in the standardized layer.

One small generated day (200 people), then rows no real delivery can hold are written into the
landing files the generator wrote (the generator itself only makes plausible rows):
- civil_affairs: a marriage registered in 2029 (after the delivery date) and a registry office
  name holding a C1 control character (U+0085);
- health: a newborn born in 2029;
- public_security: a resident whose birth date (column and ID number) is after the delivery
  date, and a resident whose name starts with a NUL byte (the measured '\\x00马萍玉' case).
Then the whole pipeline runs (extract -> standardized -> gate -> shared -> gate -> publish).
Before the rules existed the 2029 marriage failed the shared gate (latest_event_date <= today)
and no product was published, and the NUL name reached population_base.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from pathlib import Path

import duckdb
import pytest
from stdnum.iso7064 import mod_11_2

from govlake import ingest, metadata, transform
from govlake_synth import generate
from govlake.dbt import output_path
from govlake.storage import Lake

pytestmark = pytest.mark.integration

# a delivery date some days before the wall clock: an ID number born between it and today is a
# valid ID number (id_number.birth_date rejects only births after today) but still a future birth
DAY = (dt.date.today() - dt.timedelta(days=10)).isoformat()
SOON = (dt.date.fromisoformat(DAY) + dt.timedelta(days=3))  # after DAY, before today
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
NEW_RULES = {"event_date.after_delivery", "registration_date.after_delivery",
             "establishment_date.after_delivery", "birth_date.in_future", "text.control_character"}


def _q(sql: str):
    return duckdb.connect().execute(sql)


def _ds(fid: str) -> metadata.Dataset:
    return next(d for d in metadata.datasets() if d.id == fid)


def _enc(ds: metadata.Dataset) -> str:
    return {"gb18030": "gb18030", "utf-8-sig": "utf-8-sig"}.get(ds.encoding, "utf-8")


def _landing_file(lake: Lake, ds: metadata.Dataset) -> Path:
    (path,) = lake.landing(ds.dept, ds.name, DAY).glob(f"*.{ds.format}")
    return path


def _read(ds, path):
    with open(path, encoding=_enc(ds), newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write(ds, path, header, rows):
    with open(path, "w", encoding=_enc(ds), newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)


def _valid_rows(truth: Path, ds) -> list[int]:
    """0-based data row indexes the generator made valid (its ground truth)."""
    t = truth / ds.dept / f"{ds.name}.parquet"
    return [r[0] - 1 for r in _q(f"select _row_number from '{t}' where valid order by 1").fetchall()]


def _id_number(division: str, birth: dt.date, seq: int) -> str:
    body = f"{division}{birth:%Y%m%d}{seq:03d}"
    # stdnum's ric.calc_check_digit expects the number WITH a check digit (it drops the last
    # character): ISO 7064 MOD 11-2 of the 17 digits is the GB 11643 check character
    return body + mod_11_2.calc_check_digit(body)


def _inject(lake: Lake, truth: Path) -> dict:
    """Write the implausible rows; -> {(dataset id, source file, row number): {(rule, column)}}."""
    expected: dict = {}

    def where(ds, path, row_index):
        return (ds.id, str(path.relative_to(lake.landing_root)), row_index + 1)

    # marriage: a registration dated 2029; another with a C1 control character in 登记机关
    ds = _ds("civil_affairs.marriage_registration")
    path = _landing_file(lake, ds)
    header, rows = _read(ds, path)
    ok = _valid_rows(truth, ds)
    future = list(rows[ok[0]])
    future[header.index("登记日期")] = "2029年5月1日"
    future[header.index("证书编号")] = "J2029-000001"
    ctrl = list(rows[ok[1]])
    ctrl[header.index("登记机关")] = "东城区\x85民政局"
    ctrl[header.index("证书编号")] = "J2019-CTRL01"
    rows += [future, ctrl]
    _write(ds, path, header, rows)
    expected[where(ds, path, len(rows) - 2)] = {("event_date.after_delivery", "登记日期")}
    expected[where(ds, path, len(rows) - 1)] = {("text.control_character", "登记机关")}

    # birth certificate: a newborn born in 2029
    ds = _ds("health.birth_certificate")
    path = _landing_file(lake, ds)
    header, rows = _read(ds, path)
    baby = list(rows[_valid_rows(truth, ds)[0]])
    baby[header.index("出生日期")] = "2029-01-01 08:30"
    baby[header.index("出生医学证明编号")] = "Q990000001"
    rows.append(baby)
    _write(ds, path, header, rows)
    expected[where(ds, path, len(rows) - 1)] = {("birth_date.in_future", "出生日期")}

    # household: a resident born after the delivery date (birth column and ID number agree, the
    # ID number is otherwise valid); a resident whose name starts with NUL
    ds = _ds("public_security.household_registration")
    path = _landing_file(lake, ds)
    header, rows = _read(ds, path)
    ok = _valid_rows(truth, ds)
    unborn = list(rows[ok[0]])
    unborn[header.index("公民身份号码")] = _id_number("110105", SOON, 123)  # odd: male
    unborn[header.index("性别")] = "男"
    unborn[header.index("出生日期")] = f"{SOON:%Y%m%d}"
    unborn[header.index("登记日期")] = f"{SOON:%Y%m%d}"
    unborn[header.index("姓名")] = "未来人"
    nul = ok[1]
    rows[nul][header.index("姓名")] = "\x00" + rows[nul][header.index("姓名")]
    rows.append(unborn)
    _write(ds, path, header, rows)
    expected[where(ds, path, len(rows) - 1)] = {("birth_date.in_future", "出生日期"),
                                                 ("birth_date.in_future", "公民身份号码"),
                                                 ("registration_date.after_delivery", "登记日期")}
    expected[where(ds, path, nul)] = {("text.control_character", "姓名")}
    return expected


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    base = tmp_path_factory.mktemp("implausible")
    lake = Lake(base / "lake").ensure()
    old = os.environ.get("GOVLAKE_LAKE_ROOT")
    os.environ["GOVLAKE_LAKE_ROOT"] = str(lake.root)
    try:
        truth = base / "truth"
        generate.generate(lake, people=200, date=DAY, seed=11, truth_dir=truth, progress=False)
        expected = _inject(lake, truth)
        run_id = "implausible"
        for ds in metadata.datasets():
            ingest.extract_dataset(ds, lake)
        transform.build_standardized(lake, run_id)
        transform.gate_standardized(lake, run_id)
        transform.build_shared(lake, run_id)
        transform.gate_shared(lake, run_id)
        published = transform.publish_layer(lake, run_id)
        yield {"lake": lake, "truth": truth, "expected": expected, "run_id": run_id, "published": published}
    finally:
        if old is None:
            os.environ.pop("GOVLAKE_LAKE_ROOT", None)
        else:
            os.environ["GOVLAKE_LAKE_ROOT"] = old


def _quarantine(p) -> list[tuple]:
    q = output_path(p["lake"].candidate(p["run_id"]), "quarantine_rows")
    return _q(f"select dept || '.' || dataset, _source_file, _row_number, rule, \"column\", message, "
              f"original_value from '{q}'").fetchall()


def test_each_implausible_row_is_quarantined_with_its_own_rule(pipeline):
    got: dict = {}
    messages: dict = {}
    values: dict = {}
    for fid, f, rn, rule, col, msg, value in _quarantine(pipeline):
        got.setdefault((fid, f, rn), set()).add((rule, col))
        messages.setdefault((fid, f, rn), []).append(msg)
        values[(fid, f, rn, rule)] = value
    for key, rules in pipeline["expected"].items():
        assert got.get(key) == rules, (key, got.get(key))
        fid, f, rn = key
        for msg in messages[key]:  # the message names file, row and rule
            assert f"{f} row {rn}" in msg and "rule " in msg, msg
    # the detail says why: which date, which delivery date
    unborn = next(k for k, r in pipeline["expected"].items() if len(r) == 3)
    assert any(f"after the delivery date {DAY}" in m for m in messages[unborn]), messages[unborn]
    # the NUL name: original_value keeps the delivered bytes, the message shows U+FFFD and names
    # the character, so it can be printed and logged
    nul = next(k for k, r in pipeline["expected"].items()
               if k[0] == "public_security.household_registration" and ("text.control_character", "姓名") in r)
    assert values[nul + ("text.control_character",)].startswith("\x00")
    (msg,) = messages[nul]
    assert not CONTROL.search(msg) and "(value: '\ufffd" in msg and "control character U+0000 at character 1" in msg, msg


def test_the_new_rules_catch_nothing_else(pipeline):
    """The generator's own rows are plausible: the new rules quarantine only the injected rows,
    and every other row is quarantined exactly as the generator's ground truth says."""
    extra = [r for r in _quarantine(pipeline) if r[3] in NEW_RULES and r[:3] not in pipeline["expected"]]
    assert extra == []
    lake, truth = pipeline["lake"], pipeline["truth"]
    for ds in metadata.datasets():
        t = truth / ds.dept / f"{ds.name}.parquet"
        want = {(f, rn) for f, rn in _q(f"select _source_file, _row_number from '{t}' where not valid").fetchall()}
        want |= {(f, rn) for (fid, f, rn) in pipeline["expected"] if fid == ds.id}
        got = {(f, rn) for fid, f, rn, *_ in _quarantine(pipeline) if fid == ds.id}
        assert got == want, (ds.id, sorted(got ^ want)[:5])


def test_the_rest_of_each_feed_is_standardized(pipeline):
    lake = pipeline["lake"]
    quarantined = {}
    for fid, f, rn, *_ in _quarantine(pipeline):
        quarantined.setdefault(fid, set()).add((f, rn))
    for ds in metadata.datasets():
        raw = _q(f"select count(*) from read_parquet('{lake.raw_glob(ds.dept, ds.name)}')").fetchone()[0]
        staged = transform.standardized_rows(lake, pipeline["run_id"], ds).num_rows
        assert staged == raw - len(quarantined.get(ds.id, ())) and staged > 0, ds.id
    # no standardized row holds a control character or a date after its delivery
    hh = next(d for d in metadata.datasets() if d.id == "public_security.household_registration")
    con = duckdb.connect()
    con.register("stg", transform.standardized_rows(lake, pipeline["run_id"], hh))
    assert con.execute("select count(*) from stg where regexp_matches(name, '[\\x00-\\x1F\\x7F-\\x{9F}]') "
                       "or birth_date > cast(_delivery_date as date)").fetchone()[0] == 0


def test_every_product_publishes(pipeline):
    lake = pipeline["lake"]
    published = {p["product"] for p in pipeline["published"]}
    assert published == set(transform.shared_products())
    for product in transform.shared_products():
        assert lake.current_dir(product) is not None, product


def test_population_base_name_holds_no_control_character(pipeline):
    lake = pipeline["lake"]
    from govlake.sharing import crypto

    (pb,) = lake.current_dir("population_base").glob("*.parquet")
    con = duckdb.connect()  # published files holding L3/L4 values are encrypted (ADR 0014)
    names = [n for (n,) in con.execute(
        f"select name from {crypto.read_parquet_sql(pb, con, 'hive_partitioning=false')}").fetchall()]
    assert names and not [n for n in names if n and CONTROL.search(n)]
    assert "未来人" not in names


def test_standardized_suites_reject_what_the_rules_quarantine(pipeline, tmp_path):
    """The GX suites agree with the rules: standardized files that held the injected values (as
    if the rules were missing) fail the standardized gate on exactly those expectations."""
    from govlake import gate

    lake = pipeline["lake"]
    doctored = {
        "stg_civil_affairs__marriage_registration":
            "* exclude (_k) replace (case when _k = 1 then date '2029-05-01' else event_date end as event_date,"
            " case when _k = 2 then '东城区' || chr(133) || '民政局' else registry_office end as registry_office)",
        "stg_public_security__household_registration":
            "* exclude (_k) replace (case when _k = 1 then chr(0) || name else name end as name,"
            " case when _k = 2 then cast(_delivery_date as date) + 1 else registration_date end"
            " as registration_date)",
    }
    tables, clean = {}, {}
    con = duckdb.connect()
    for model, select in doctored.items():
        ds = next(d for d in metadata.datasets() if model == f"stg_{d.dept}__{d.name}")
        con.register("stg", transform.standardized_rows(lake, pipeline["run_id"], ds))  # what the gate validated
        out, clean[model] = tmp_path / f"{model}.parquet", tmp_path / f"{model}.clean.parquet"
        con.execute(f"copy stg to '{clean[model]}' (format parquet)")
        con.execute(f"copy (select {select} from (select *, row_number() over (order by _source_file, _row_number) as _k "
                    f"from stg)) to '{out}' (format parquet)")
        tables[model] = out
    result = gate.validate(lake, "standardized", tables, "implausible-doctored")
    assert not result.success
    failed = {m: sorted((f.type, f.column) for f in r.failed) for m, r in result.suite_results.items()}
    assert failed == {
        "stg_civil_affairs__marriage_registration": [
            ("expect_column_values_to_not_match_regex", "registry_office"),
            ("unexpected_rows_expectation", None)],
        "stg_public_security__household_registration": [
            ("expect_column_values_to_not_match_regex", "name"),
            ("unexpected_rows_expectation", None)],
    }, failed
    # and the same rows as built pass
    assert gate.validate(lake, "standardized", clean, "implausible-clean").success
