"""Test support for the access tests: a small graded product YAML and published versions.

Tests create their own published versions (Parquet + _manifest.json + current symlink via
Lake.switch_current), so they do not depend on the publisher or the dbt models landing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from govlake.masking import id_check_digit
from govlake.storage import Lake

SHARED_MODELS_YAML = """\
version: 2
models:
  - name: population_base
    description: 人口基础库
    config:
      meta:
        product: true
        title: 人口基础库
        code: GOV-RK-0001
        owner_department: 公安
        owner: 省公安厅人口管理处
        sharing_type: 有条件共享
        sharing_condition: 用于政务服务办理核验和人口统计
        legal_basis: 《中华人民共和国居民身份证法》
        update_cycle: daily
        summary: 全省户籍人口的身份、户籍地和联系方式，跨部门比对后的基础库
    columns:
      - name: id_number
        description: 公民身份号码
        config: {meta: {grade: L4, element: id_number}}
      - name: name
        description: 姓名
        config: {meta: {grade: L3, element: name}}
      - name: gender_code
        description: 性别代码 GB/T 2261.1
        config: {meta: {grade: L2, element: gender_code}}
      - name: birth_date
        config: {meta: {grade: L3, element: birth_date}}
      - name: division_code
        config: {meta: {grade: L1, element: division_code}}
      - name: address
        config: {meta: {grade: L3, element: address}}
      - name: phone
        config: {meta: {grade: L3, element: phone}}
      - name: department_count
        config: {meta: {grade: L1, element: count}}
  - name: marriage_household_check
    description: 婚姻户籍比对
    config:
      meta:
        product: true
        title: 婚姻状况与户籍比对
        code: GOV-HY-0002
        owner_department: 民政
        owner: 省民政厅婚姻登记处
        sharing_type: 有条件共享
        sharing_condition: 仅用于婚姻登记核验
        update_cycle: daily
        summary: 户籍婚姻状况与婚姻登记记录的比对结果
    columns:
      - name: id_number
        config: {meta: {grade: L4, element: id_number}}
      - name: name
        config: {meta: {grade: L3, element: name}}
      - name: household_status_code
        config: {meta: {grade: L2, element: marital_status_code}}
      - name: certificate_number
        config: {meta: {grade: L3, element: certificate_number}}
  - name: secret_registry
    description: 不予共享的登记簿
    config:
      meta:
        product: true
        title: 涉密登记簿
        code: GOV-XX-0009
        owner_department: 公安
        owner: 省公安厅
        sharing_type: 不予共享
        legal_basis: 《中华人民共和国保守国家秘密法》
        update_cycle: monthly
        summary: 不予共享
    columns:
      - name: id_number
        config: {meta: {grade: L4, element: id_number}}
"""

GRANTS_YAML = """\
roles:
  ga_analyst:
    title: 公安 分析员
    department: 公安
    clearance: L4
    purposes: [人口信息核查]
    expires: 2099-12-31
    products: [population_base, marriage_household_check]
  mz_analyst:
    title: 民政 分析员
    department: 民政
    clearance: L2
    purposes: [婚姻登记核验]
    expires: 2099-12-31
    products:
      population_base:
        columns: {id_number: token}
      marriage_household_check:
        columns: {id_number: token, certificate_number: withhold}
  stats_public:
    title: 统计 公开
    department: 统计
    clearance: L1
    purposes: [人口统计分析]
    expires: 2099-12-31
    products: [population_base, secret_registry]
  expired_role:
    title: 已到期
    department: 卫健
    clearance: L3
    purposes: [出生医学证明核验]
    expires: 2020-01-01
    products: [population_base]
"""

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗欧阳"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英"
STREETS = ["建国路88号", "文三路100号", "人民大道1号3栋201室", "解放街12号"]
DIVISIONS = [("110105", "北京市朝阳区"), ("330106", "浙江省杭州市西湖区"),
             ("440305", "广东省深圳市南山区"), ("320583", "江苏省苏州市昆山市")]


def make_id(rng: random.Random, division: str) -> str:
    d = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 30000))
    first17 = f"{division}{d:%Y%m%d}{rng.randrange(0, 1000):03d}"
    return first17 + id_check_digit(first17)


def people(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        div, div_name = DIVISIONS[i % len(DIVISIONS)]
        idn = make_id(rng, div)
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice([1, 2, 2, 3])))
        out.append({
            "id_number": idn,
            "name": name,
            "gender_code": str(int(idn[16]) % 2 or 2),
            "birth_date": f"{idn[6:10]}-{idn[10:12]}-{idn[12:14]}",
            "division_code": div,
            "address": div_name + rng.choice(STREETS),
            "phone": "13" + f"{rng.randrange(0, 10**9):09d}",
            "department_count": rng.randrange(1, 5),
        })
    return out


def write_dbt_dir(root: Path, yaml_text: str = SHARED_MODELS_YAML) -> Path:
    d = root / "dbt_project"
    (d / "models" / "shared").mkdir(parents=True, exist_ok=True)
    (d / "models" / "shared" / "_shared__models.yml").write_text(yaml_text, encoding="utf-8")
    return d


def write_grants(root: Path, text: str = GRANTS_YAML) -> Path:
    p = root / "grants.yml"
    p.write_text(text, encoding="utf-8")
    return p


def publish(lake: Lake, product: str, rows: list[dict], version: int | None = None,
            inputs: list[dict] | None = None, gate: dict | None = None,
            created_at: str | None = None) -> dict:
    """Write one published version (Parquet + manifest) and switch ``current`` to it."""
    version = version or (max(lake.versions(product), default=0) + 1)
    vdir = lake.version_dir(product, version)
    vdir.mkdir(parents=True, exist_ok=False)
    table = pa.Table.from_pylist(rows)
    data = vdir / "part-0.parquet"
    pq.write_table(table, data)
    manifest = {
        "product": product,
        "version": version,
        "run_id": f"test-run-{version}",
        "created_at": created_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "row_count": table.num_rows,
        "columns": [{"name": f.name, "type": str(f.type)} for f in table.schema],
        "files": [{"path": data.name, "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
                   "rows": table.num_rows}],
        "inputs": inputs if inputs is not None else [
            {"dept": "public_security", "dataset": "household_registration",
             "batch_id": "b-20261124-ga", "sha256": "ab" * 32, "delivered": "2026-11-24"},
            {"dept": "civil_affairs", "dataset": "marriage_registration",
             "batch_id": "b-20261124-mz", "sha256": "cd" * 32, "delivered": "2026-11-24"},
        ],
        "gate": gate if gate is not None else {
            "passed": True, "checks": 42, "failed": 0,
            "docs_path": str(lake.reports_root / "data_docs" / "index.html")},
    }
    (vdir / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2),
                                         encoding="utf-8")
    lake.switch_current(product, version)
    return manifest
