"""Every department's standardized dataset is a shared resource (信息资源) of the catalog
(docs/adr/0015-sharing-type-and-grades.md).

After a small pipeline run (generate -> extract -> standardized -> gate -> shared -> gate ->
publish), the six department resources and the three integrated products are published; each
resource is gated (its suite's verdict in the manifest), graded exactly as its source YAML
says, holds the current state of its dataset (= what the integrated layer dedups from the same
deliveries), is in the catalog with its Chinese title, and can be granted: a role granted one
department resource queries it through the query engine of the sharing service, masked per its
clearance."""

from __future__ import annotations

import os

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from govlake import audit, catalog, config, ingest, metadata, products, query, transform
from govlake_synth import generate
from govlake.storage import Lake

pytestmark = pytest.mark.integration
DATE = "2026-11-20"
RUN = "resources1"
DATASETS = ["civil_affairs.marriage_registration", "health.birth_certificate",
            "human_resources.social_insurance", "market_regulation.enterprise_registration",
            "public_security.household_registration", "tax.taxpayer_registration"]
RESOURCES = ["ds_" + d.replace(".", "__") for d in DATASETS]
PRODUCTS = ["legal_entity_base", "marriage_household_check", "population_base"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    base = tmp_path_factory.mktemp("resources")
    saved = {k: os.environ.get(k) for k in ("GOVLAKE_LAKE_ROOT", "GOVLAKE_TOKEN_KEY")}
    os.environ["GOVLAKE_LAKE_ROOT"] = str(base / "lake")
    os.environ["GOVLAKE_TOKEN_KEY"] = "3c" * 32
    try:
        lk = Lake(base / "lake").ensure()
        generate.generate(lk, people=150, date=DATE, seed=5, progress=False)
        for ds in metadata.datasets():
            ingest.extract_dataset(ds, lk)
        transform.build_standardized(lk, RUN)
        transform.gate_standardized(lk, RUN)
        transform.build_shared(lk, RUN)
        transform.gate_shared(lk, RUN)
        published = transform.publish_layer(lk, RUN)
        yield lk, published
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_published(lk: Lake, name: str):
    f = next(lk.current_dir(name).glob("*.parquet"))
    try:  # published files may be encrypted at rest (govlake.sharing.crypto)
        from govlake.sharing import crypto
        opts = crypto.arrow_read_options(f)
    except ImportError:
        opts = {}
    return pq.read_table(f, **opts)


def _source_yaml_columns(ds_id: str) -> list[tuple[str, str]]:
    """(element, grade) of each column, read straight from the dept's source YAML file."""
    dept, name = ds_id.split(".")
    path = config.dbt_project_dir() / "models" / "staging" / dept / f"_{dept}__sources.yml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    tbl = next(t for s in doc["sources"] if s["name"] == dept for t in s["tables"] if t["name"] == name)
    return [(c["config"]["meta"]["element"], c["config"]["meta"]["grade"]) for c in tbl["columns"]]


def test_nine_resources_published_and_audited(lake):
    lk, published = lake
    assert sorted(transform.shared_products()) == sorted(RESOURCES + PRODUCTS)
    assert sorted(p["product"] for p in published) == sorted(RESOURCES + PRODUCTS)
    for name in RESOURCES + PRODUCTS:
        assert lk.current_version(name) == 1, name
    audited = sorted(e["payload"]["product"] for e in audit.entries(lk) if e["kind"] == "publication")
    assert audited == sorted(RESOURCES + PRODUCTS)
    assert audit.verify(lk).ok


def test_each_resource_gated_with_its_suite(lake):
    lk, _ = lake
    for ds_id, name in zip(DATASETS, RESOURCES):
        m = lk.manifest(name)
        assert m["gate"]["success"] is True and m["gate"]["suite"] == f"shared.{name}", name
        assert m["row_count"] > 0 and m["row_count"] == m["gate"]["row_count"], name
        # inputs: the live deliveries of this dataset only
        assert m["inputs"] and {f"{i['dept']}.{i['dataset']}" for i in m["inputs"]} == {ds_id}, name


def test_grades_equal_the_source_yaml(lake):
    lk, _ = lake
    meta = products.load()
    for ds_id, name in zip(DATASETS, RESOURCES):
        want = _source_yaml_columns(ds_id)
        pm = meta[name]
        assert [(c.name, c.grade) for c in pm.columns] == want, name
        assert [c.element for c in pm.columns] == [e for e, _ in want]
        assert pm.title == metadata.dataset(ds_id).title and pm.owner_department == metadata.dataset(ds_id).department
        # the published file has exactly those columns, in that order
        assert [c["name"] for c in lk.manifest(name)["columns"]] == [e for e, _ in want], name


def test_resource_is_the_current_state_of_the_dataset(lake):
    """Valid rows of the live batches, one per key: the rows int_<dept>__<dataset> holds."""
    lk, _ = lake
    con = duckdb.connect(str(lk.duckdb_path), read_only=True)
    try:
        for ds in metadata.datasets():
            t = _read_published(lk, ds.resource)
            con.register("res", t)
            cols = ", ".join(f'"{c.element}"' for c in ds.columns)
            want = sorted(map(repr, con.execute(f"select {cols} from int_{ds.dept}__{ds.name}").fetchall()))
            got = sorted(map(repr, con.execute(f"select {cols} from res").fetchall()))
            assert got == want, ds.id
            keys = ", ".join(f'"{k}"' for k in ds.key)
            assert con.execute(f"select count(*) = count(distinct ({keys})) from res").fetchall() == [(True,)], ds.id
    finally:
        con.close()


def test_resources_in_the_catalog(lake):
    lk, _ = lake
    cat = catalog.collect(lk)
    assert cat["metadata_errors"] == []
    by_name = {p["name"]: p for p in cat["products"]}
    for ds_id, name in zip(DATASETS, RESOURCES):
        e = by_name[name]
        ds = metadata.dataset(ds_id)
        assert e["title"] == ds.title and e["current_version"] == 1 and e["gate"]["passed"] is True
        assert e["sharing"]["type"] == ds.sharing_type and e["owner_department"] == ds.department
        assert [(c["name"], c["grade"]) for c in e["columns"]] == _source_yaml_columns(ds_id)
        assert not e["warnings"], (name, e["warnings"])
    # the fixed contradiction: 法人基础库 has an L4 column, so it is conditional
    leb = by_name["legal_entity_base"]
    assert leb["sharing"]["type"] == "有条件共享" and leb["sharing"]["condition"] and leb["grade"] == "L4"


def test_granted_department_resource_is_queryable_masked_per_clearance(lake):
    """mz_marriage_analyst (民政, clearance L3) is granted 民政's marriage registrations: the L3
    names come in clear, the L4 ID numbers as join tokens (config/grants.yml)."""
    lk, _ = lake
    name = "ds_civil_affairs__marriage_registration"
    res = query.run_query("mz_marriage_analyst", "婚姻登记核验",
                          f"select certificate_number, event_type, husband_name, husband_id_number, "
                          f"wife_id_number from {name} order by certificate_number, event_type",
                          lake=lk, limit=10000)
    truth = _read_published(lk, name).to_pylist()
    truth.sort(key=lambda r: (r["certificate_number"], r["event_type"]))
    rows = res.table.to_pylist()
    assert res.row_count == len(truth) > 0 and res.products == {name: 1}
    assert [r["husband_name"] for r in rows] == [t["husband_name"] for t in truth]  # L3: clear
    assert [r["certificate_number"] for r in rows] == [t["certificate_number"] for t in truth]
    assert res.treatments[name] == {"husband_id_number": "token", "wife_id_number": "token"}
    clear_ids = {t["husband_id_number"] for t in truth} | {t["wife_id_number"] for t in truth}
    tokens = [r["husband_id_number"] for r in rows]
    assert all(tok and tok not in clear_ids for tok in tokens)
    # same person, same token: the token is a join key, not a random mask
    by_id = {}
    for r, t in zip(rows, truth):
        assert by_id.setdefault(t["husband_id_number"], r["husband_id_number"]) == r["husband_id_number"]


def test_ungranted_role_is_refused_the_department_resource(lake):
    lk, _ = lake
    with pytest.raises(query.QueryRefused, match="ds_civil_affairs__marriage_registration"):
        query.run_query("sc_market_analyst", "企业信用监管",
                        "select count(*) from ds_civil_affairs__marriage_registration", lake=lk)


def test_rerun_publishes_no_new_version(lake):
    """Unchanged content and inputs: publish_layer keeps the current versions (no new one)."""
    lk, _ = lake
    transform.build_shared(lk, "resources2")
    transform.gate_shared(lk, "resources2")
    again = {p["product"]: p for p in transform.publish_layer(lk, "resources2")}
    for name in RESOURCES:
        assert again[name].get("unchanged") is True and lk.versions(name) == [1], name
