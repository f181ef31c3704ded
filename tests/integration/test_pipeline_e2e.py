"""The whole chain through Airflow on generated data with ground truth:
extract -> dbt standardized -> gate -> dbt shared -> gate -> publish.

Checks what a data engineer would: standardized values equal the truth, every invalid row is
quarantined with the right reason, marriage_household_check equals the truth exactly, row
conservation per feed and batch, and a failing gate never publishes."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest

from govlake import audit, metadata, runner, transform
from govlake_synth import generate
from govlake.sharing import crypto
from lake_support import use_lake_root

pytestmark = pytest.mark.integration
DATE = "2026-11-24"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, airflow_env):
    base = tmp_path_factory.mktemp("pipeline")
    truth = base / "truth"
    with use_lake_root(base / "lake") as lake:
        generate.generate(lake, people=800, date=DATE, seed=11, truth_dir=truth, progress=False)
        results = runner.run_pipeline(DATE, progress=False)
        yield lake, truth, results


def _transform(results):
    tr = next(r for r in results if r["dag_id"] == "transform_shared")
    return tr, transform.run_id_for(tr["run_id"])


def test_every_dag_succeeded(pipeline):
    _, _, results = pipeline
    assert [r["dag_id"] for r in results][-2:] == ["transform_shared", "ops_monitor"]
    for r in results:
        assert r["state"] == "success", (r["dag_id"], r["tasks"])


def test_standardized_values_equal_truth(pipeline):
    lake, truth, results = pipeline
    _, run_id = _transform(results)
    con = duckdb.connect()
    for ds in metadata.datasets():
        con.register("stg", transform.standardized_rows(lake, run_id, ds))  # what the gate validated
        stg = "stg"
        t = truth / ds.dept / f"{ds.name}.parquet"
        n_valid = con.execute(f"select count(*) from '{t}' where valid").fetchone()[0]
        n_stg = con.execute(f"select count(*) from {stg}").fetchone()[0]
        assert n_valid == n_stg, f"{ds.id}: {n_valid} valid rows in truth, {n_stg} standardized"
        for col in ds.columns:
            e = col.element
            bad = con.execute(
                f"""select t._row_number, t."{e}", cast(s."{e}" as varchar)
                    from '{t}' t left join {stg} s using (_source_file, _row_number)
                    where t.valid and coalesce(t."{e}", '<null>') <> coalesce(cast(s."{e}" as varchar), '<null>')
                    order by 1 limit 5""").fetchall()
            assert not bad, f"{ds.id}.{e} (from {col.name}): (row, truth, standardized) {bad}"


def test_invalid_rows_quarantined_with_the_right_reason(pipeline):
    lake, truth, results = pipeline
    _, run_id = _transform(results)
    q = lake.candidate(run_id) / "standardized" / "quarantine_rows.parquet"
    con = duckdb.connect()
    total = 0
    for ds in metadata.datasets():
        t = truth / ds.dept / f"{ds.name}.parquet"
        expected = dict(((f, r), reason) for f, r, reason in con.execute(
            f"select _source_file, _row_number, reason from '{t}' where not valid").fetchall())
        got: dict = {}
        for f, r, rule, column, value, message in con.execute(
                f"select _source_file, _row_number, rule, \"column\", original_value, message from '{q}' "
                f"where dept = ? and dataset = ?", [ds.dept, ds.name]).fetchall():
            got.setdefault((f, r), set()).add(rule)
            assert f in message and str(r) in message and rule in message, message
        assert set(got) == set(expected), (
            f"{ds.id}: quarantined but valid in truth {sorted(set(got) - set(expected))[:5]}; "
            f"invalid in truth but not quarantined {sorted(set(expected) - set(got))[:5]}")
        wrong = {k: (expected[k], sorted(got[k])) for k in expected if expected[k] not in got[k]}
        assert not wrong, f"{ds.id}: (truth reason, quarantine rules) {list(wrong.items())[:5]}"
        total += len(expected)
    assert total > 0, "the generated data should contain invalid rows"


def test_row_conservation_per_feed_and_batch(pipeline):
    lake, _, results = pipeline
    _, run_id = _transform(results)
    build = lake.candidate(run_id) / "standardized"
    con = duckdb.connect()
    for ds in metadata.datasets():
        con.register("stg_rows", transform.standardized_rows(lake, run_id, ds))
        rows = con.execute(f"""
            with raw as (select _batch_id, count(*) n from read_parquet('{lake.raw_glob(ds.dept, ds.name)}') group by 1),
                 stg as (select _batch_id, count(*) n from stg_rows group by 1),
                 q as (select _batch_id, count(distinct _row_number) n from '{build / "quarantine_rows.parquet"}'
                       where dept = '{ds.dept}' and dataset = '{ds.name}' group by 1)
            select raw._batch_id, raw.n, coalesce(stg.n, 0), coalesce(q.n, 0)
            from raw left join stg using (_batch_id) left join q using (_batch_id)""").fetchall()
        assert rows
        for batch, raw_n, stg_n, q_n in rows:
            assert raw_n == stg_n + q_n, f"{ds.id} batch {batch}: raw {raw_n} != standardized {stg_n} + quarantined {q_n}"


def test_marriage_household_check_equals_truth(pipeline):
    lake, truth, _ = pipeline
    con = duckdb.connect()
    data = lake.current_dir("marriage_household_check") / "marriage_household_check.parquet"
    assert crypto.is_encrypted(data)  # L3/L4 columns: encrypted at rest by default (ADR 0014)
    got = set(con.execute(f"select id_number, household_status_code, derived_status_code "
                          f"from {crypto.read_parquet_sql(data, con)}").fetchall())
    want = set(con.execute(f"select id_number, household_status_code, derived_status_code "
                           f"from '{truth / 'marriage_household_check.parquet'}'").fetchall())
    assert want, "the generator should plant disagreements"
    assert got == want, f"missing {sorted(want - got)[:5]}, unexpected {sorted(got - want)[:5]}"


def test_products_published_audited_and_catalogued(pipeline):
    lake, _, _ = pipeline
    for product in ("population_base", "legal_entity_base", "marriage_household_check"):
        assert lake.current_version(product) == 1, product
        m = lake.manifest(product)
        assert m["row_count"] > 0 and m["gate"]["success"] is True and m["inputs"]
    published = sorted(e["payload"]["product"] for e in audit.entries(lake) if e["kind"] == "publication")
    # the three integrated products, the ops product and the six department resources (ADR 0015)
    resources = sorted(ds.resource for ds in metadata.datasets())
    assert published == sorted(["department_connectivity", "legal_entity_base", "marriage_household_check",
                                "population_base"] + resources)
    assert len(resources) == 6 and all(lake.current_version(r) == 1 for r in resources)
    assert audit.verify(lake).ok
    cat = json.loads((lake.catalog_root / "catalog.json").read_text("utf-8"))
    assert "population_base" in json.dumps(cat, ensure_ascii=False)


def test_failed_product_is_held_while_the_others_publish(pipeline):
    """A marriage event dated in the future but not after its delivery date (a delivery dated
    2031-01-02: the standardized rule event_date.after_delivery lets it pass) fails the shared
    suite of marriage_household_check (latest_event_date <= today). Each product is gated on
    its own: that product is held at v=1, the others publish (the marriage resource gets its new
    version), and the run fails at the end naming the product, suite, expectation and values."""
    lake, _, _ = pipeline
    con = duckdb.connect()
    pb = lake.current_dir("population_base")
    single = con.execute(f"""select id_number, name, gender_code from {crypto.read_parquet_sql(pb / 'population_base.parquet', con)}
                             where in_household_registration and marital_status_code = '10'
                             order by id_number""").fetchall()
    man = next(p for p in single if p[2] == "1")
    woman = next(p for p in single if p[2] == "2")
    ds = metadata.dataset("civil_affairs.marriage_registration")
    row = {"登记类型": "结婚", "登记日期": "2031年1月1日", "男方身份证号": man[0], "男方姓名": man[1],
           "女方身份证号": woman[0], "女方姓名": woman[1], "登记机关": "测试婚姻登记处", "证书编号": "J-FUTURE-0001"}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(ds.column_names)
    w.writerow([row[c] for c in ds.column_names])
    d = lake.landing(ds.dept, ds.name, "2031-01-02")
    d.mkdir(parents=True)
    (d / "marriage_registration_20310102.csv").write_bytes(buf.getvalue().encode("utf-8-sig"))

    results = runner.run_pipeline("2031-01-02", progress=False)
    tr, run_id = _transform(results)
    assert tr["state"] == "failed"
    assert tr["tasks"]["gate_shared"] == "success" and tr["tasks"]["publish"] == "success"
    assert tr["tasks"]["held_products"] == "failed"
    assert lake.current_version("marriage_household_check") == 1 and lake.versions("marriage_household_check") == [1]
    pubs = {p["product"]: p for p in tr["returns"]["publish"]}
    assert pubs["marriage_household_check"]["held"] and any(
        "latest_event_date" in f for f in pubs["marriage_household_check"]["failed"])
    assert lake.current_version("ds_civil_affairs__marriage_registration") == 2  # the others publish
    assert not any(p.get("held") for n, p in pubs.items() if n != "marriage_household_check")
    held = tr["returns"]["gate_shared"]["held"]
    assert list(held) == ["marriage_household_check"] and "2031" in " ".join(held["marriage_household_check"])
    log = "".join(results[-1:] and [json.dumps(r, ensure_ascii=False, default=str) for r in results])
    assert "marriage_household_check" in log
    # every live version has its publication record
    recorded = {(e["payload"]["product"], e["payload"]["version"]) for e in audit.entries(lake)
                if e["kind"] == "publication"}
    for product in lake.products():
        v = lake.current_version(product)
        if v is not None and product != "department_connectivity":
            assert (product, v) in recorded, product
    assert (lake.candidate(run_id) / "shared" / "marriage_household_check.parquet").exists()
    report = lake.report_dir(run_id, "shared")
    assert (report / "report.html").exists() and (report / "data_docs" / "index.html").exists()
    summary = json.loads((report / "validation.json").read_text("utf-8"))
    text = json.dumps(summary, ensure_ascii=False)
    assert "marriage_household_check" in text and "latest_event_date" in text
    history = [json.loads(x) for x in (lake.meta_root / "gate_history.jsonl").read_text("utf-8").splitlines()]
    failed = [h for h in history if h["run_id"] == run_id and not h["success"]]
    assert [h["model"] for h in failed] == ["marriage_household_check"]
    assert any("latest_event_date" in f for f in failed[0]["failed"])
