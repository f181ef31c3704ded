"""A 7th feed onboarded by configuration plus one command, delivered as XLSX.

住房公积金 contributions of the housing provident fund centre (person ID, employer USCC, monthly
base and amount). In a copy of the project (GOVLAKE_PROJECT_ROOT; the repository keeps six
feeds) the test edits ONE file — the new `_housing_fund__sources.yml` — runs ONE command —
`govlake scaffold` — then the pipeline: extraction of the workbook's sheet, standardization,
quarantine with reasons (an Excel-truncated ID among them), both gates, the shared resource
ds_housing_fund__contributions, the catalog, `govlake status`, 互联互通率 over seven
departments and population_base.known_by."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from govlake import config, metadata

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DATE = "2026-11-20"
REPO = config.PROJECT_ROOT

SOURCES_YML = """\
version: 2

sources:
  - name: housing_fund
    description: 住房公积金管理中心 — 住房公积金缴存数据
    config:
      meta:
        department: 住房公积金管理中心
        department_code: "GJJ"
        owner: 市住房公积金管理中心归集处
        contact: gjc@gjj.example.gov.cn
        source_system: 住房公积金综合业务系统
    tables:
      - name: contributions
        description: 住房公积金缴存 — monthly contributions per person and employer, an Excel export.
        config:
          meta:
            title: 住房公积金缴存信息
            update_cycle: monthly
            delivery: snapshot
            format: xlsx
            sheet: 缴存明细
            encoding: binary
            file_pattern: "*.xlsx"
            key: [id_number, contribution_month]
            sharing_type: 有条件共享
            sharing_condition: 用于住房保障资格核验
            legal_basis: 《住房公积金管理条例》
            external_location: "read_parquet('{{ env_var('GOVLAKE_LAKE_ROOT') }}/raw/housing_fund/contributions/*/*.parquet', union_by_name=true)"
        columns:
          - name: 证件号码
            description: 缴存人公民身份号码
            config: {meta: {element: id_number, standard: id_number, required: true, grade: L3}}
          - name: 单位统一社会信用代码
            description: 缴存单位统一社会信用代码
            config: {meta: {element: employer_uscc, standard: uscc, required: true, grade: L1}}
          - name: 缴存基数
            description: 月缴存基数（元）
            config: {meta: {element: monthly_base, standard: decimal, grade: L3}}
          - name: 月缴存额
            description: 月缴存额（元）
            config: {meta: {element: monthly_amount, standard: decimal, grade: L3}}
          - name: 缴存月份
            description: 缴存月份 YYYY-MM
            config: {meta: {element: contribution_month, standard: year_month, required: true, grade: L1}}
"""


def _env(root: Path, lake: Path) -> dict:
    return {**os.environ, "GOVLAKE_PROJECT_ROOT": str(root), "GOVLAKE_LAKE_ROOT": str(lake),
            "GOVLAKE_TOKEN_KEY": "3c" * 32}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("seventh")
    root = base / "proj"
    for d in ("dbt_project", "expectations", "config"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    lake_root = base / "lake"
    saved = {k: os.environ.get(k) for k in ("GOVLAKE_PROJECT_ROOT", "GOVLAKE_LAKE_ROOT", "GOVLAKE_TOKEN_KEY")}
    os.environ.update({k: v for k, v in _env(root, lake_root).items() if k.startswith("GOVLAKE_")})
    try:
        # 1. the ONE edit: the new department's source YAML
        src = root / "dbt_project/models/staging/housing_fund/_housing_fund__sources.yml"
        src.parent.mkdir(parents=True)
        src.write_text(SOURCES_YML, encoding="utf-8")
        # 2. the ONE command
        sc = subprocess.run([sys.executable, "-m", "govlake.cli", "scaffold"], env=_env(root, lake_root),
                            capture_output=True, text=True, timeout=300)
        assert sc.returncode == 0, sc.stderr
        # 3. deliveries and the pipeline (as test_department_resources)
        from govlake import ingest, transform
        from govlake_synth import generate, synth
        from govlake.storage import Lake
        lk = Lake(lake_root).ensure()
        generate.generate(lk, people=150, date=DATE, seed=5, progress=False)
        assert len(metadata.datasets()) == 7
        assert sorted({d.dept for d in metadata.datasets()}) == sorted(
            ["civil_affairs", "health", "housing_fund", "human_resources", "market_regulation",
             "public_security", "tax"])
        for ds in metadata.datasets():
            if ds.dept != "housing_fund":
                ingest.extract_dataset(ds, lk)
        hh = pq.read_table(next((lake_root / "raw/public_security/household_registration").rglob("*.parquet")))
        assert hh.num_rows > 100
        ids = sorted({i for i in hh.column("公民身份号码").to_pylist()
                      if i and len(i) == 18 and i[:17].isdigit() and synth.id_check_char(i[:17]) == i[17]
                      and _real_date(i[6:14])})
        usccs = [generate._company_core(5, k)[3] for k in range(40)]
        usccs = [u for u in usccs if u[:1] == "9"][:10]
        ds = metadata.dataset("housing_fund.contributions")
        # Excel's damage: a registered person's ID typed as a number (-> ...000, passing MOD 11-2)
        victim = next(i for i in ids if synth.id_check_char(i[:15] + "00") == "0" and not i.endswith("000"))
        header, rows, faults = synth.rows_for(ds, 40, seed=1, ids=[i for i in ids if i[:15] != victim[:15]][:40],
                                              usccs=usccs)
        rows.append([int(victim[:15] + "000"), usccs[0], 8000, 960, "2026-10"])
        faults.append((len(rows), "id_number.excel_truncated", "证件号码"))
        rows.append(["1.10105E+17", usccs[0], 8000, 960, "2026-09"])  # the scientific-notation text
        faults.append((len(rows), "id_number.format", "证件号码"))
        landing = lk.landing_root / "housing_fund/contributions" / DATE
        synth.write_xlsx(landing / "gjj_contributions_202610.xlsx", "缴存明细", header, rows)
        # a second workbook without the sheet: file quarantine naming file, sheet and rule
        synth.write_xlsx(landing / "gjj_wrong_sheet.xlsx", "Sheet1", header, rows[:3])
        extract = ingest.extract_dataset(ds, lk)
        RUN = "seventh1"
        transform.build_standardized(lk, RUN)
        transform.gate_standardized(lk, RUN)
        transform.build_shared(lk, RUN)
        transform.gate_shared(lk, RUN)
        published = transform.publish_layer(lk, RUN)
        yield {"root": root, "lake": lk, "extract": extract, "faults": faults, "victim": victim,
               "published": published, "ids": ids, "sc": sc}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _real_date(ymd: str) -> bool:
    try:
        return dt.date(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8])) < dt.date(2026, 1, 1)
    except ValueError:
        return False


def test_one_file_one_command(run):
    root = run["root"]
    out = run["sc"].stdout
    for f in ("models/staging/housing_fund/stg_housing_fund__contributions.sql",
              "models/staging/checked/chk_housing_fund__contributions.sql",
              "models/intermediate/int_housing_fund__contributions.sql",
              "models/shared/resources/ds_housing_fund__contributions.sql",
              "models/staging/housing_fund/_housing_fund__models.yml"):
        assert f"dbt_project/{f}: created" in out
        assert "do not edit" in (root / "dbt_project" / f).read_text(encoding="utf-8")
    assert "expectations/standardized/stg_housing_fund__contributions.json: created" in out
    assert "expectations/shared/ds_housing_fund__contributions.json: created" in out
    assert "- housing_fund.contributions" in (root / "dbt_project/dbt_project.yml").read_text(encoding="utf-8")


def test_xlsx_extracted_and_missing_sheet_quarantined(run):
    files = {Path(f.source_file).name: f for f in run["extract"].files}
    good = files["gjj_contributions_202610.xlsx"]
    assert good.status == "ingested" and good.rows == 40 + len(run["faults"])
    bad = files["gjj_wrong_sheet.xlsx"]
    assert bad.status == "quarantined" and bad.reason == "contract.missing_sheet"
    assert "gjj_wrong_sheet.xlsx" in bad.message and "'缴存明细'" in bad.message
    assert "contract.missing_sheet" in bad.message


def test_faulty_rows_quarantined_with_reasons(run):
    lk = run["lake"]
    q = duckdb.sql(f"select _row_number, rule, \"column\", message from read_parquet('{lk.quarantine_rows_root}/**/*.parquet') "
                   "where dataset = 'contributions' order by 1").fetchall()
    got = {(r[0], r[1], r[2]) for r in q}
    assert set(run["faults"]) <= got, (run["faults"], q)
    msg = next(r[3] for r in q if r[1] == "id_number.excel_truncated")
    assert run["victim"] in msg  # names the registered candidate


def test_resource_published_gated_and_truncated_id_not_admitted(run):
    lk, published = run["lake"], run["published"]
    assert "ds_housing_fund__contributions" in json.dumps(published, default=str)
    f = next(lk.current_dir("ds_housing_fund__contributions").glob("*.parquet"))
    from govlake.sharing import crypto
    t = pq.read_table(f, **crypto.arrow_read_options(f))
    assert t.num_rows == 40
    assert set(t.column_names) == {"id_number", "employer_uscc", "monthly_base", "monthly_amount",
                                   "contribution_month"}
    pb = next(lk.current_dir("population_base").glob("*.parquet"))
    pop = pq.read_table(pb, **crypto.arrow_read_options(pb)).to_pylist()
    by_id = {r["id_number"]: r for r in pop}
    truncated = run["victim"][:15] + "000"
    assert truncated not in by_id  # not admitted as a new person
    housing_ids = set(t.column("id_number").to_pylist())
    assert housing_ids and all("housing_fund" in by_id[i]["known_by"].split(",") for i in housing_ids)


def test_catalog_and_status_show_seven_departments(run):
    lk = run["lake"]
    from govlake import catalog, ops
    cat = json.dumps(catalog.collect(lk), ensure_ascii=False, default=str)
    assert "ds_housing_fund__contributions" in cat and "住房公积金缴存信息" in cat
    c = ops.compute(lk, ops.now(None))  # the wall clock: deliveries were ingested just now
    assert c.registered_departments == 7
    dept = next(d for d in c.departments if d.dept == "housing_fund")
    assert dept.department == "住房公积金管理中心"
    assert next(f for f in c.feeds if f.dept == "housing_fund").state != "never_delivered"
    st = subprocess.run([sys.executable, "-m", "govlake.cli", "status"],
                        env=_env(run["root"], lk.root), capture_output=True, text=True, timeout=300)
    assert "住房公积金管理中心" in st.stdout, st.stdout + st.stderr
    print(next(line for line in st.stdout.splitlines() if "住房公积金" in line))
