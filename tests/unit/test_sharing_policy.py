"""Sharing type vs grades (docs/adr/0015-sharing-type-and-grades.md): 无条件共享 shares only
L1/L2 columns (an L3/L4 column must be withheld); the product-metadata load — used by the
pipeline, the sharing service and `govlake catalog` — fails naming resource and column. Each
department's dataset is a resource whose metadata is derived from its source YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from govlake import catalog, config, metadata, products, transform
from govlake.publish import PublishError
from govlake.storage import Lake

PRODUCT_YAML = """\
version: 2
models:
  - name: open_enterprises
    description: 企业公示
    config:
      meta:
        product: true
        title: 企业公示信息
        owner_department: 市场监管
        owner: 省市场监督管理局
        sharing_type: {sharing}
        sharing_condition: {condition}
        legal_basis: 《企业信息公示暂行条例》
        update_cycle: daily
    columns:
      - name: uscc
        config: {{meta: {{grade: L1, element: uscc}}}}
      - name: enterprise_name
        config: {{meta: {{grade: L1, element: enterprise_name}}}}
      - name: legal_rep_name
        config: {{meta: {{grade: L2, element: legal_rep_name}}}}
      - name: legal_rep_id_number
        config: {{meta: {{grade: {id_grade}, element: legal_rep_id_number{withheld}}}}}
"""

SOURCES_YAML = """\
version: 2
sources:
  - name: culture
    config:
      meta:
        department: 文旅
        department_code: "WL"
        owner: 省文化和旅游厅
    tables:
      - name: venue_registration
        description: 场馆登记
        config:
          meta:
            title: 文化场馆登记信息
            update_cycle: daily
            delivery: snapshot
            format: csv
            encoding: utf-8
            key: [venue_code]
            sharing_type: {sharing}
            sharing_condition: 无条件
        columns:
          - name: 场馆编码
            config: {{meta: {{element: venue_code, standard: text, grade: L1}}}}
          - name: 场馆名称
            config: {{meta: {{element: venue_name, standard: text, grade: L1}}}}
          - name: 负责人身份证号
            config: {{meta: {{element: manager_id_number, standard: id_number, grade: L4}}}}
"""


def _product_file(tmp_path: Path, sharing="无条件共享", condition="无条件", id_grade="L4", withheld="") -> Path:
    d = tmp_path / "dbt_project" / "models" / "shared"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "_shared__models.yml"
    p.write_text(PRODUCT_YAML.format(sharing=sharing, condition=condition, id_grade=id_grade,
                                     withheld=withheld), encoding="utf-8")
    return p


def _sources_file(tmp_path: Path, sharing="无条件共享") -> Path:
    d = tmp_path / "dbt_project" / "models" / "staging" / "culture"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "_culture__sources.yml"
    p.write_text(SOURCES_YAML.format(sharing=sharing), encoding="utf-8")
    return p


def test_unconditional_product_with_an_l4_column_fails_naming_product_and_column(tmp_path):
    f = _product_file(tmp_path)
    with pytest.raises(products.ProductMetadataError) as exc:
        products.load(files=[f])
    msg = str(exc.value)
    assert str(f) in msg and "'open_enterprises'" in msg and "'legal_rep_id_number'" in msg
    assert "L4" in msg and "无条件共享" in msg


def test_unconditional_product_with_an_l3_column_fails_too(tmp_path):
    with pytest.raises(products.ProductMetadataError, match="open_enterprises.*legal_rep_id_number.*L3"):
        products.load(files=[_product_file(tmp_path, id_grade="L3")])


def test_unconditional_dataset_resource_with_an_l4_column_fails_naming_resource_and_column(tmp_path):
    f = _sources_file(tmp_path)
    with pytest.raises(products.ProductMetadataError) as exc:
        products.load(tmp_path / "dbt_project")
    msg = str(exc.value)
    assert str(f) in msg and "ds_culture__venue_registration" in msg and "'manager_id_number'" in msg


def test_allowed_combinations(tmp_path):
    # 无条件共享 with only L1/L2 columns
    assert products.load(files=[_product_file(tmp_path, id_grade="L2")])["open_enterprises"].grade == "L2"
    # 有条件共享 and 不予共享 allow any grade
    p = products.load(files=[_product_file(tmp_path, sharing="有条件共享", condition="经审批用于登记核验")])
    assert p["open_enterprises"].grade == "L4"
    assert products.load(files=[_product_file(tmp_path, sharing="不予共享")])["open_enterprises"].grade == "L4"
    # a dataset resource that is conditional
    r = products.load(files=[_sources_file(tmp_path, sharing="有条件共享")])["ds_culture__venue_registration"]
    assert [(c.name, c.grade) for c in r.columns] == [("venue_code", "L1"), ("venue_name", "L1"),
                                                      ("manager_id_number", "L4")]
    assert r.title == "文化场馆登记信息" and r.owner_department == "文旅" and r.dataset == "culture.venue_registration"


def test_withheld_column_is_allowed_and_is_not_shared(tmp_path):
    p = products.load(files=[_product_file(tmp_path, withheld=", withheld: true")])["open_enterprises"]
    assert p.sharing_type == "无条件共享" and p.grade == "L2"
    assert p.column("legal_rep_id_number") is None
    assert [c.name for c in p.withheld] == ["legal_rep_id_number"]


def test_publisher_refuses_a_file_with_a_withheld_column(tmp_path):
    p = products.load(files=[_product_file(tmp_path, withheld=", withheld: true")])["open_enterprises"]
    bad = tmp_path / "open_enterprises.parquet"
    pq.write_table(pa.table({"uscc": ["91110000100000000A"], "legal_rep_id_number": ["110101199001011234"]}), bad)
    with pytest.raises(PublishError, match="open_enterprises.*legal_rep_id_number.*withheld"):
        transform.refuse_withheld("open_enterprises", bad, p)
    good = tmp_path / "ok.parquet"
    pq.write_table(pa.table({"uscc": ["91110000100000000A"]}), good)
    transform.refuse_withheld("open_enterprises", good, p)  # no error


def test_catalog_command_fails_on_a_contradiction(tmp_path, monkeypatch):
    """`govlake catalog` exits 1 and names resource and column; catalog.collect lists the error."""
    f = _product_file(tmp_path)
    lake = Lake(tmp_path / "lake").ensure()
    cat = catalog.collect(lake, dbt_dir=f.parents[2])
    assert any("open_enterprises" in e and "legal_rep_id_number" in e for e in cat["metadata_errors"])
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root), "GOVLAKE_PROJECT_ROOT": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "govlake.cli", "catalog"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "open_enterprises" in r.stdout + r.stderr and "legal_rep_id_number" in r.stdout + r.stderr


def test_repository_metadata_passes_and_legal_entity_base_is_conditional():
    meta = products.load()
    leb = meta["legal_entity_base"]
    assert leb.sharing_type == "有条件共享" and leb.sharing_condition
    assert leb.column("legal_rep_id_number").grade == "L4"
    assert leb.extra["interface"]["key"] == "uscc"  # the lead's interface block is kept
    for p in meta.values():
        if p.sharing_type == "无条件共享":
            assert all(c.grade in ("L1", "L2") for c in p.columns), p.name


def test_every_dataset_is_a_resource_graded_from_its_source_yaml():
    meta = products.load()
    for ds in metadata.datasets():
        r = meta[ds.resource]
        assert ds.resource.isascii() and r.dataset == ds.id and r.title == ds.title
        doc = yaml.safe_load(ds.yaml_path.read_text(encoding="utf-8"))
        tbl = next(t for s in doc["sources"] if s["name"] == ds.dept for t in s["tables"] if t["name"] == ds.name)
        assert [(c.name, c.grade, c.element) for c in r.columns] == [
            (c["config"]["meta"]["element"], c["config"]["meta"]["grade"], c["config"]["meta"]["element"])
            for c in tbl["columns"]]
        assert r.sharing_type == tbl["config"]["meta"]["sharing_type"]
        # a model builds it and a reviewed suite gates it
        assert (config.dbt_project_dir() / "models" / "shared" / "resources" / f"{ds.resource}.sql").exists()
        assert (config.project_root() / "expectations" / "shared" / f"{ds.resource}.json").exists()
    assert len([p for p in meta.values() if p.dataset]) == len(metadata.datasets()) == 6
