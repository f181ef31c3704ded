"""End to end through Airflow: generated deliveries -> extraction DAGs -> raw Parquet."""

from __future__ import annotations

import csv
import io
import json

import duckdb
import pytest

from govlake import metadata, runner
from govlake_synth import generate
from govlake.ledger import Ledger
from lake_support import use_lake_root

pytestmark = pytest.mark.integration
DATE = "2026-11-24"
RARE_NAME = "䶮𠀀镕喆科技有限公司"


def _delivered_rows(ds, path):
    """Parse a landing file independently of the pipeline (stdlib only)."""
    enc = ds.encoding
    text = path.read_bytes().decode(enc)
    if ds.format == "jsonl":
        out = []
        for line in text.splitlines():
            if line.strip():
                obj = json.loads(line, parse_int=str, parse_float=str)
                out.append([obj.get(c) for c in ds.column_names])
        return out
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    idx = [header.index(c) for c in ds.column_names]
    return [[r[i] for i in idx] for r in rows[1:]]


def _raw(lake, ds):
    con = duckdb.connect()
    cols = ", ".join(f'"{c}"' for c in ds.column_names)
    return con.execute(
        f"select {cols}, _batch_id, _source_file, _source_sha256, _row_number, _ingested_at "
        f"from read_parquet('{lake.raw_glob(ds.dept, ds.name)}') order by _source_file, _row_number"
    ).fetchall()


def _extract(date=DATE):
    results = runner.run_pipeline(date, only=list(metadata.departments()), progress=False)
    failed = [r for r in results if r["state"] != "success"]
    assert not failed, failed
    return {s["dataset"]: s for r in results for s in r["summaries"].values()}


@pytest.fixture(scope="module")
def landed(tmp_path_factory, airflow_env):
    with use_lake_root(tmp_path_factory.mktemp("e2e") / "lake") as lake:
        generated = generate.generate(lake, people=300, date=DATE, seed=7, progress=False)
        # a row with characters outside GBK (GB18030 four-byte) and a middle-dot name
        mr = metadata.dataset("market_regulation.enterprise_registration")
        f = next(lake.landing(mr.dept, mr.name, DATE).glob("*.csv"))
        rare = dict.fromkeys(mr.column_names, "")
        rare.update({"统一社会信用代码": "91350200MA2YJ1XR9G", "企业名称": RARE_NAME, "法定代表人": "阿卜杜拉·艾山",
                     "登记状态": "存续"})
        with open(f, "ab") as fh:
            fh.write((",".join(rare[c] for c in mr.column_names) + "\r\n").encode("gb18030"))
        first = _extract()
        yield lake, generated, first


def test_raw_rows_equal_delivered_values_with_lineage(landed):
    lake, _, summaries = landed
    for ds in metadata.datasets():
        files = list(lake.landing(ds.dept, ds.name, DATE).glob(ds.file_pattern))
        assert len(files) == 1, ds.id
        delivered = _delivered_rows(ds, files[0])
        raw = _raw(lake, ds)
        assert summaries[ds.id]["rows"] == len(delivered) == len(raw), ds.id
        n = len(ds.column_names)
        # values exactly as delivered (Chinese text, full-width digits, '+86 …', JSON numbers as text)
        assert [list(r[:n]) for r in raw] == delivered, ds.id
        sha = {r[n + 2] for r in raw}
        assert len(sha) == 1 and len(sha.pop()) == 64
        assert [r[n + 3] for r in raw] == list(range(1, len(raw) + 1))
        assert all(r[n + 1] == str(files[0].relative_to(lake.landing_root)) for r in raw)
        assert all(r[n + 4] is not None and r[n] for r in raw)


def test_chinese_text_round_trips(landed):
    lake, _, _ = landed
    ds = metadata.dataset("market_regulation.enterprise_registration")
    rows = _raw(lake, ds)
    names = [r[ds.column_names.index("企业名称")] for r in rows]
    assert RARE_NAME in names
    assert "阿卜杜拉·艾山" in [r[ds.column_names.index("法定代表人")] for r in rows]
    with pytest.raises(UnicodeEncodeError):
        RARE_NAME.encode("gbk")


def test_rerun_adds_nothing(landed):
    lake, _, _ = landed
    before = {ds.id: len(_raw(lake, ds)) for ds in metadata.datasets()}
    ledger_before = len(Ledger(lake).all())
    again = _extract()
    for ds in metadata.datasets():
        assert again[ds.id]["rows"] == 0 and again[ds.id]["skipped"] == 1, again[ds.id]
        assert len(_raw(lake, ds)) == before[ds.id]
    assert len(Ledger(lake).all()) == ledger_before


def test_corrupt_file_quarantined_others_unaffected(landed):
    lake, _, _ = landed
    hh = metadata.dataset("public_security.household_registration")
    tax = metadata.dataset("tax.taxpayer_registration")
    next_day = "2026-11-25"
    d = lake.landing(hh.dept, hh.name, next_day)
    d.mkdir(parents=True)
    good = next(lake.landing(hh.dept, hh.name, DATE).glob("*.csv")).read_bytes()
    (d / "household_registration_20261125.csv").write_bytes(good[: len(good) // 2] + b"\xff\xfe\xfd\n" + good[len(good) // 2:])
    t = lake.landing(tax.dept, tax.name, next_day)
    t.mkdir(parents=True)
    header, *rest = next(lake.landing(tax.dept, tax.name, DATE).glob("*.csv")).read_text("utf-8").splitlines()
    (t / "taxpayer_registration_20261125.csv").write_text(
        "\n".join([header.replace(",主管税务机关", ""), *[r.rsplit(",", 1)[0] for r in rest[:5]]]) + "\n", "utf-8")
    mr = metadata.dataset("market_regulation.enterprise_registration")
    rows_before = len(_raw(lake, mr))

    s = _extract(next_day)
    assert s[hh.id]["quarantined"] == 1 and s[hh.id]["rows"] == 0
    assert s[tax.id]["quarantined"] == 1
    assert s[mr.id]["skipped"] == 1 and len(_raw(lake, mr)) == rows_before

    reasons = {json.loads(p.read_text("utf-8"))["reason"]: json.loads(p.read_text("utf-8"))
               for p in lake.quarantine_root.rglob("reason.json")}
    enc = reasons["encoding.undecodable"]
    assert enc["source_file"].endswith("household_registration_20261125.csv") and enc["row"] > 1
    assert "household_registration_20261125.csv" in enc["message"] and f"line {enc['row']}" in enc["message"]
    miss = reasons["contract.missing_column"]
    assert miss["columns"] == ["主管税务机关"] and "主管税务机关" in miss["message"]
    # the quarantined files are kept, byte for byte
    kept = list(lake.quarantine_files(hh.dept, hh.name).rglob("household_registration_20261125.csv"))
    assert kept and kept[0].read_bytes() == (d / "household_registration_20261125.csv").read_bytes()


def test_corrected_redelivery_supersedes(landed):
    lake, _, _ = landed
    hh = metadata.dataset("public_security.household_registration")
    f = next(lake.landing(hh.dept, hh.name, DATE).glob("*.csv"))
    data = f.read_bytes()
    lines = data.split(b"\n")
    corrected = b"\n".join(lines[:-2] + [b""])  # the department drops its last row and redelivers
    f.write_bytes(corrected)
    s = _extract()
    assert s[hh.id]["rows"] == len(lines) - 3  # header and trailing newline excluded
    entries = [e for e in Ledger(lake).all(hh.dept, hh.name) if e.delivery_date == DATE and e.status == "ingested"]
    assert len(entries) == 2
    old, new = sorted(entries, key=lambda e: e.ingested_at)
    assert new.supersedes == old.batch_id and old.superseded_by == new.batch_id
    ledger_pq = duckdb.sql(f"select batch_id, superseded_by from read_parquet('{lake.ledger_export}') "
                           f"where batch_id = '{old.batch_id}'").fetchall()
    assert ledger_pq == [(old.batch_id, new.batch_id)]


def test_unchanged_snapshot_and_empty_increment_are_deliveries(landed):
    """An unchanged snapshot sent for a new date adds no rows but is recorded as a delivery on
    that date (freshness); an incremental feed with no events that day (header only) is a valid
    empty delivery, not a fault."""
    lake, _, _ = landed
    day = "2026-11-26"
    tax = metadata.dataset("tax.taxpayer_registration")
    src = next(lake.landing(tax.dept, tax.name, DATE).glob("*.csv"))
    (lake.landing(tax.dept, tax.name, day)).mkdir(parents=True)
    (lake.landing(tax.dept, tax.name, day) / "taxpayer_registration_20261126.csv").write_bytes(src.read_bytes())
    mar = metadata.dataset("civil_affairs.marriage_registration")
    (lake.landing(mar.dept, mar.name, day)).mkdir(parents=True)
    (lake.landing(mar.dept, mar.name, day) / "marriage_registration_20261126.csv").write_bytes(
        (",".join(mar.column_names) + "\r\n").encode("utf-8-sig"))
    tax_rows = len(_raw(lake, tax))

    s = _extract(day)
    assert s[tax.id]["rows"] == 0 and s[tax.id]["quarantined"] == 0 and len(_raw(lake, tax)) == tax_rows
    dup = [e for e in Ledger(lake).all(tax.dept, tax.name) if e.delivery_date == day]
    assert [(e.status, e.rows) for e in dup] == [("duplicate", 0)]
    assert s[mar.id]["quarantined"] == 0 and s[mar.id]["ingested_files"] == 1 and s[mar.id]["rows"] == 0

    again = _extract(day)  # a re-run records nothing more
    assert again[tax.id]["rows"] == 0 and again[tax.id]["skipped"] == again[tax.id]["files"]
    assert len([e for e in Ledger(lake).all(tax.dept, tax.name) if e.delivery_date == day]) == 1


def test_landing_anomalies_are_refused_and_reported_by_the_run(landed, tmp_path, capsys):
    """Through Airflow: a symlinked file and a symlinked date folder pointing outside the lake,
    a future date folder, a folder not named as a date and an undeclared department are not
    ingested, nothing of the outside reaches raw or quarantine, and `govlake run` (its summary),
    `govlake status --json` and the alerts report each of them."""
    import os
    import subprocess
    import sys

    from govlake import alerts

    lake, _, _ = landed
    tax = metadata.dataset("tax.taxpayer_registration")
    secret = "OUTSIDE-SECRET-机密"
    outside = tmp_path / "outside"
    outside.mkdir()
    body = (",".join(tax.column_names) + "\n" + ",".join([secret] * len(tax.column_names)) + "\n").encode("utf-8")
    (outside / "taxpayer_registration_20261127.csv").write_bytes(body)
    day, linked_day = "2026-11-27", "2026-11-28"
    good = next(lake.landing(tax.dept, tax.name, DATE).glob("*.csv")).read_bytes()
    lake.landing(tax.dept, tax.name, day).mkdir(parents=True)
    (lake.landing(tax.dept, tax.name, day) / "taxpayer_registration_20261127.csv").symlink_to(
        outside / "taxpayer_registration_20261127.csv")
    lake.landing(tax.dept, tax.name, linked_day).symlink_to(outside, target_is_directory=True)
    for folder in ("2099-01-01", "latest"):
        lake.landing(tax.dept, tax.name, folder).mkdir(parents=True)
        (lake.landing(tax.dept, tax.name, folder) / "taxpayer_registration_x.csv").write_bytes(good)
    (lake.landing_root / "foreign_bureau" / "feed" / day).mkdir(parents=True)
    (lake.landing_root / "foreign_bureau" / "feed" / day / "a.csv").write_bytes(good)
    ledger_before = len(Ledger(lake).all())
    raw_before = len(_raw(lake, tax))

    results = runner.run_pipeline(linked_day, only=list(metadata.departments()), progress=False)
    assert all(r["state"] == "success" for r in results), results
    summaries = {s["dataset"]: s for r in results for s in r["summaries"].values()}
    expected = {
        f"tax/taxpayer_registration/{day}/taxpayer_registration_20261127.csv": "landing.symlink",
        f"tax/taxpayer_registration/{linked_day}": "landing.symlink",
        "tax/taxpayer_registration/2099-01-01": "landing.future_date",
        "tax/taxpayer_registration/latest": "landing.not_a_date",
        "foreign_bureau": "landing.undeclared_department",
    }
    listed = {p["file"].removeprefix("landing/"): p["reason"] for s in summaries.values() for p in s["problems"]}
    assert listed == expected
    # nothing ingested from them, nothing of the outside content in the lake
    assert len(_raw(lake, tax)) == raw_before and len(Ledger(lake).all()) == ledger_before
    assert secret not in {r[0] for r in _raw(lake, tax)}
    assert not [p for p in lake.root.rglob("*") if p.is_file() and not p.is_symlink()
                and secret.encode() in p.read_bytes()]
    reasons = [json.loads(p.read_text("utf-8")) for p in lake.quarantine_files(tax.dept, tax.name).rglob("reason.json")]
    assert sorted(r["source_file"] for r in reasons if r["reason"] == "landing.symlink") == sorted(
        p for p, k in expected.items() if k == "landing.symlink")

    # `govlake run` prints them
    runner.print_summary(results, None)
    out = capsys.readouterr().out
    for p in expected:
        assert f"landing/{p}" in out, (p, out)

    # govlake status --json and the alerts
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(lake.root)}
    env.pop("GOVLAKE_NOW", None)
    st = subprocess.run([sys.executable, "-m", "govlake.cli", "status", "--json"], capture_output=True, text=True,
                        env=env, timeout=120)
    assert st.returncode == 1
    assert {a["path"]: a["kind"] for a in json.loads(st.stdout)["landing_anomalies"]} == expected
    alerts.evaluate(lake, cfg={**alerts.DEFAULT_CONFIG, "notifiers": [{"type": "jsonl"}]})
    assert {a["key"] for a in alerts.read_alerts(lake) if a["kind"] == "landing_anomaly"} == {
        f"landing_anomaly:{p}" for p in expected}
