"""The synthetic data generator: formats, encodings, consistency, faults, ground truth, scale."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from stdnum.cn import ric
from stdnum.cn import uscc as stdnum_uscc

from govlake import metadata
from govlake_synth import generate
from govlake.storage import Lake

DATE = "2026-11-24"
PEOPLE = 2000
RULES = {
    "required.missing", "id_number.format", "id_number.birth_date", "id_number.province",
    "id_number.check_digit", "id_number.legacy_centenarian", "id_number.birth_mismatch",
    "id_number.gender_mismatch", "uscc.format", "uscc.check_char", "uscc.org_code",
    "date.invalid", "phone.format", "code.unmapped", "division_code.invalid", "decimal.invalid",
    "year_month.invalid", "row.duplicate",
}
DATASETS = {d.id: d for d in metadata.datasets()}


def _gen(root: Path, truth: Path | None = None, **kw):
    lake = Lake(root).ensure()
    args = {"people": PEOPLE, "date": DATE, "seed": 42, "progress": False} | kw
    return lake, generate.generate(lake, truth_dir=truth, **args)


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """One generated day with 3x the default fault rates, plus its ground truth."""
    base = tmp_path_factory.mktemp("gen")
    lake, result = _gen(base / "lake", base / "truth", fault_rate=3.0)
    return lake, result, base / "truth"


def _records(path: Path, ds: metadata.Dataset) -> list:
    """The delivered data records (header excluded), decoded with the feed's own encoding."""
    text = path.read_bytes().decode(ds.encoding)
    if ds.format == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ds.column_names
    return rows[1:]


def _truth(truth_dir: Path, fid: str):
    ds = DATASETS[fid]
    return pq.read_table(truth_dir / ds.dept / f"{ds.name}.parquet").to_pylist()


def _ids(truth_rows, element="id_number"):
    return {r[element] for r in truth_rows if r["valid"] and r[element]}


# ---- files, formats, encodings ----------------------------------------------------------------
def test_files_land_in_landing_with_metadata_names(gen):
    lake, result, _ = gen
    assert set(result) == set(generate.FEEDS)
    for fid, info in result.items():
        ds = DATASETS[fid]
        ext = "jsonl" if ds.format == "jsonl" else "csv"
        expected = lake.landing(ds.dept, ds.name, DATE) / f"{ds.name}_20261124.{ext}"
        assert info["path"] == expected and expected.is_file()
        assert info["rows"] == len(_records(expected, ds)) > 0
        # nothing else (no temp files) left in the delivery folder
        assert [p.name for p in expected.parent.iterdir()] == [expected.name]


def test_encodings_as_each_department_delivers(gen):
    lake, result, _ = gen
    for fid in (generate.HOUSEHOLD, generate.ENTERPRISE):
        raw = result[fid]["path"].read_bytes()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
        raw.decode("gb18030")  # strict
    # characters outside GBK made it through as GB18030 four-byte sequences
    text = "".join(result[f]["path"].read_bytes().decode("gb18030")
                   for f in (generate.HOUSEHOLD, generate.ENTERPRISE))
    non_gbk = {ch for ch in text if ord(ch) > 0x7F and not _encodes(ch, "gbk")}
    assert non_gbk & {"䶮", "𠀀", "𠮷", "𪚥"}
    marriage = result[generate.MARRIAGE]["path"].read_bytes()
    assert marriage.startswith(b"\xef\xbb\xbf")
    marriage.decode("utf-8")
    for fid in (generate.TAX, generate.BIRTH, generate.SOCIAL):
        raw = result[fid]["path"].read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf")
        raw.decode("utf-8")


def _encodes(ch: str, enc: str) -> bool:
    try:
        ch.encode(enc)
        return True
    except UnicodeEncodeError:
        return False


def test_headers_and_jsonl_fields_equal_metadata(gen):
    _, result, _ = gen
    for fid, info in result.items():
        ds = DATASETS[fid]
        recs = _records(info["path"], ds)
        if ds.format == "jsonl":
            assert all(list(r) == ds.column_names for r in recs)
        else:
            assert all(len(r) == len(ds.column_names) for r in recs)


def test_deterministic_for_a_seed(tmp_path):
    _, a = _gen(tmp_path / "a", people=500)
    _, b = _gen(tmp_path / "b", people=500)
    _, c = _gen(tmp_path / "c", people=500, seed=7)
    for fid in generate.FEEDS:
        assert a[fid]["path"].read_bytes() == b[fid]["path"].read_bytes(), fid
    assert a[generate.HOUSEHOLD]["path"].read_bytes() != c[generate.HOUSEHOLD]["path"].read_bytes()


# ---- ground truth ------------------------------------------------------------------------------
def test_truth_matches_delivered_rows(gen):
    lake, result, truth = gen
    for fid, info in result.items():
        ds = DATASETS[fid]
        rows = _truth(truth, fid)
        cols = list(pq.read_schema(truth / ds.dept / f"{ds.name}.parquet").names)
        assert cols == ["_source_file", "_row_number", "valid", "reason", "column"] + [
            c.element for c in ds.columns]
        rel = info["path"].relative_to(lake.landing_root).as_posix()
        assert {r["_source_file"] for r in rows} == {rel}
        assert sorted(r["_row_number"] for r in rows) == list(range(1, info["rows"] + 1))
        invalid = [r for r in rows if not r["valid"]]
        assert len(invalid) == info["invalid_rows"] > 0, fid
        for r in invalid:
            assert r["reason"] in RULES
            assert r["column"] is None or r["column"] in ds.column_names
            assert all(r[c.element] is None for c in ds.columns)
        for r in rows:
            if r["valid"]:
                assert r["reason"] is None and r["column"] is None


def test_valid_ids_and_codes_pass_stdnum(gen):
    _, _, truth = gen
    n_ids = n_codes = 0
    for fid, ds in DATASETS.items():
        if fid not in generate.FEEDS:
            continue
        rows = [r for r in _truth(truth, fid) if r["valid"]]
        for col in ds.columns:
            for r in rows:
                v = r[col.element]
                if v is None:
                    continue
                if col.standard == "id_number":
                    assert ric.is_valid(v) and v == v.upper() and len(v) == 18, (fid, v)
                    n_ids += 1
                elif col.standard == "uscc":
                    assert stdnum_uscc.is_valid(v), (fid, v)
                    n_codes += 1
    assert n_ids > 2 * PEOPLE and n_codes > 100


def _nfkc(s) -> str:
    return unicodedata.normalize("NFKC", str(s)).strip().upper()


def test_invalid_rows_really_break_their_rule(gen):
    _, result, truth = gen
    seen = defaultdict(int)
    for fid, info in result.items():
        ds = DATASETS[fid]
        recs = _records(info["path"], ds)
        for t in _truth(truth, fid):
            if t["valid"]:
                continue
            rec = recs[t["_row_number"] - 1]
            raw = rec[t["column"]] if ds.format == "jsonl" and t["column"] else (
                rec[ds.column_names.index(t["column"])] if t["column"] else None)
            reason = t["reason"]
            seen[reason] += 1
            if reason in ("id_number.check_digit", "id_number.birth_date", "id_number.format"):
                assert not ric.is_valid(_nfkc(raw)), (fid, raw)
                if reason == "id_number.format":
                    assert not ric.compact(_nfkc(raw)).isdigit() or len(_nfkc(raw)) not in (15, 18)
            elif reason == "id_number.legacy_centenarian":
                assert len(raw) == 15 and 996 <= int(raw[12:15]) <= 999
            elif reason == "id_number.birth_mismatch":  # reported on the birth-date column
                id_ = _nfkc(rec[0])
                assert t["column"] == "出生日期" and ric.is_valid(id_) and id_[6:14] != raw
            elif reason == "id_number.gender_mismatch":  # reported on the gender column
                id_ = _nfkc(rec["aac002"] if ds.format == "jsonl" else rec[0])
                male = int(id_[16]) % 2 == 1
                assert t["column"] in ("性别", "aac004") and ric.is_valid(id_)
                assert raw == ("女" if male else "男") or raw == ("2" if male else "1")
            elif reason.startswith("uscc."):
                assert not stdnum_uscc.is_valid(_nfkc(raw)) or reason == "uscc.org_code"
            elif reason == "row.duplicate":
                line = info["path"].read_text(encoding=ds.encoding).splitlines()[t["_row_number"] - 1]
                earlier = info["path"].read_text(encoding=ds.encoding).splitlines()[: t["_row_number"] - 1]
                assert line in earlier
    # the documented and undocumented faults all occur at 3x rates
    assert {"id_number.check_digit", "id_number.format", "id_number.birth_date",
            "id_number.birth_mismatch", "id_number.gender_mismatch", "uscc.format",
            "uscc.check_char", "uscc.org_code", "date.invalid", "phone.format", "code.unmapped",
            "decimal.invalid", "year_month.invalid", "row.duplicate"} <= set(seen)


def test_excel_mangled_ids_are_quarantined(gen):
    _, result, truth = gen
    ds = DATASETS[generate.MARRIAGE]
    recs = _records(result[generate.MARRIAGE]["path"], ds)
    forms = set()
    for t in _truth(truth, generate.MARRIAGE):
        if t["column"] in ("男方身份证号", "女方身份证号"):
            raw = recs[t["_row_number"] - 1][ds.column_names.index(t["column"])]
            if "E+" in raw:
                forms.add("scientific")
                assert t["reason"] == "id_number.format"
            elif raw.endswith("000") and t["reason"] == "id_number.check_digit":
                forms.add("zeros")
    assert forms == {"scientific", "zeros"}


def test_documented_quirks_stay_valid_and_standardize(gen):
    _, result, truth = gen
    # household: 15-digit, full-width, trailing spaces, lower-case x, messy phones
    ds = DATASETS[generate.HOUSEHOLD]
    recs = _records(result[generate.HOUSEHOLD]["path"], ds)
    kinds = set()
    for t in _truth(truth, generate.HOUSEHOLD):
        if not t["valid"]:
            continue
        rec = recs[t["_row_number"] - 1]
        raw_id, raw_phone = rec[0], rec[8]
        norm = unicodedata.normalize("NFKC", raw_id).strip().upper()
        if len(norm) == 15:
            kinds.add("15-digit")
            assert t["id_number"][:6] + t["id_number"][8:17] == norm
        else:
            assert norm == t["id_number"]
        if raw_id != raw_id.rstrip():
            kinds.add("trailing space")
        if any("０" <= ch <= "９" for ch in raw_id):
            kinds.add("full-width")
        if raw_id.rstrip().endswith("x"):
            kinds.add("lower x")
        if raw_phone and not raw_phone.isdigit():
            kinds.add("messy phone")
            assert "".join(ch for ch in raw_phone.replace("+86", "") if ch.isdigit()) == t["phone"]
        assert t["birth_date"].replace("-", "") == rec[4]
    assert kinds == {"15-digit", "trailing space", "full-width", "lower x", "messy phone"}
    # social insurance: numbers instead of strings come back as the same text
    ds = DATASETS[generate.SOCIAL]
    recs = _records(result[generate.SOCIAL]["path"], ds)
    numbers = 0
    for t in _truth(truth, generate.SOCIAL):
        rec = recs[t["_row_number"] - 1]
        if t["valid"] and isinstance(rec["aac002"], int):
            numbers += 1
            assert str(rec["aac002"]) == t["id_number"]
        if t["valid"] and isinstance(rec["aae030"], int):
            numbers += 1
            assert f"{str(rec['aae030'])[:4]}-{str(rec['aae030'])[4:]}" == t["start_month"]
    assert numbers > 10
    # enterprise: Excel serial day numbers; tax: full-width letters
    ds = DATASETS[generate.ENTERPRISE]
    recs = _records(result[generate.ENTERPRISE]["path"], ds)
    serial = [(recs[t["_row_number"] - 1][5], t["establishment_date"])
              for t in _truth(truth, generate.ENTERPRISE) if t["valid"]
              and recs[t["_row_number"] - 1][5].isdigit()]
    assert serial
    import datetime as dt
    for raw, iso in serial:
        assert (dt.date(1899, 12, 30) + dt.timedelta(days=int(raw))).isoformat() == iso
    ds = DATASETS[generate.TAX]
    recs = _records(result[generate.TAX]["path"], ds)
    fw = [t for t in _truth(truth, generate.TAX)
          if t["valid"] and recs[t["_row_number"] - 1][0] != t["uscc"]]
    assert fw and all(_nfkc(recs[t["_row_number"] - 1][0]) == t["uscc"] for t in fw)


def test_names_middle_dots_and_gender_codes(gen):
    _, result, truth = gen
    dotted = [t for f in generate.FEEDS for t in _truth(truth, f)
              if t["valid"] and any("·" in (t.get(k) or "") for k in t if k.endswith("name"))]
    assert dotted
    for f in generate.FEEDS:
        for t in _truth(truth, f):
            for k, v in t.items():
                if k.endswith("name") and v:
                    assert not any(ch in v for ch in "•‧・\u200b"), v
    ds = DATASETS[generate.BIRTH]
    recs = _records(result[generate.BIRTH]["path"], ds)
    for t in _truth(truth, generate.BIRTH):
        if t["valid"]:
            assert {"0": "2", "1": "1"}[recs[t["_row_number"] - 1][2]] == t["gender_code"]


# ---- consistency across feeds --------------------------------------------------------------
def test_people_and_companies_are_consistent_across_feeds(gen):
    _check_consistency(gen[2], slack=0.12)  # at 3x faults, ~7% of household rows are quarantined
    births = _truth(gen[2], generate.BIRTH)
    assert any(t["valid"] and t["father_id_number"] is None for t in births)


def _resolves(named: set, known: set, slack: float) -> bool:
    return bool(named) and len(named - known) <= slack * len(named) + (5 if slack else 0)


def _check_consistency(truth: Path, slack: float):
    """Everyone named in another feed is in the household register (but for quarantined
    household rows: ``slack``); companies are shared by market regulation and tax."""
    household = _truth(truth, generate.HOUSEHOLD)
    people = _ids(household)
    assert len(people) >= (1 - slack) * PEOPLE
    marriage = _truth(truth, generate.MARRIAGE)
    spouses = _ids(marriage, "husband_id_number") | _ids(marriage, "wife_id_number")
    assert _resolves(spouses, people, slack)
    social = _ids(_truth(truth, generate.SOCIAL))
    assert _resolves(social, people, slack)
    births = _truth(truth, generate.BIRTH)
    mothers = _ids(births, "mother_id_number")
    fathers = _ids(births, "father_id_number")
    assert _resolves(mothers, people, slack)
    assert _resolves(fathers, people, slack)
    # every ID number belongs to someone of matching gender in the household register
    gender = {t["id_number"]: t["gender_code"] for t in household if t["valid"]}
    for t in marriage:
        if t["valid"]:
            assert gender.get(t["husband_id_number"], "1") == "1"
            assert gender.get(t["wife_id_number"], "2") == "2"
    ent = _truth(truth, generate.ENTERPRISE)
    tax = _truth(truth, generate.TAX)
    e_codes, t_codes = _ids(ent, "uscc"), _ids(tax, "uscc")
    both = e_codes & t_codes
    assert len(both) >= (0.8 - slack) * len(e_codes | t_codes)
    assert e_codes - t_codes and t_codes - e_codes  # some only in one of the two
    reps = _ids(ent, "legal_rep_id_number") | _ids(tax, "legal_rep_id_number")
    assert _resolves(reps, people, slack)
    employers = {t["employer_uscc"] for t in _truth(truth, generate.SOCIAL)
                 if t["valid"] and t["employer_uscc"]}
    assert _resolves(employers, e_codes | t_codes, slack)


def test_marriage_household_check_follows_the_rule(gen):
    """Recompute the check from the marriage and household truth alone and compare."""
    _, _, truth = gen
    household = {t["id_number"]: t["marital_status_code"]
                 for t in _truth(truth, generate.HOUSEHOLD) if t["valid"]}
    latest: dict[str, tuple[str, str]] = {}
    for t in _truth(truth, generate.MARRIAGE):
        if not t["valid"] or t["event_type"] == "reissue":
            continue
        for who in ("husband_id_number", "wife_id_number"):
            pid = t[who]
            if pid not in latest or t["event_date"] > latest[pid][0]:
                latest[pid] = (t["event_date"], t["event_type"])
    expected = set()
    for pid, (_, kind) in latest.items():
        if pid not in household:
            continue
        derived = "20" if kind == "marriage" else "40"
        code = household[pid]
        if (derived == "20" and code not in ("20", "21", "22", "23")) or (derived == "40" and code != "40"):
            expected.add((pid, code, derived))
    got = {tuple(r.values()) for r in pq.read_table(truth / "marriage_household_check.parquet").to_pylist()}
    assert got == expected
    # about 3% of the people are deliberately inconsistent
    assert 0.015 * PEOPLE <= len(got) <= 0.06 * PEOPLE


def test_fault_rate_zero_gives_clean_data(tmp_path):
    lake, result = _gen(tmp_path / "lake", tmp_path / "truth", fault_rate=0)
    assert all(info["invalid_rows"] == 0 for info in result.values())
    for fid in generate.FEEDS:
        assert all(t["valid"] for t in _truth(tmp_path / "truth", fid))
    ds = DATASETS[generate.HOUSEHOLD]
    ids = [r[0] for r in _records(result[generate.HOUSEHOLD]["path"], ds)]
    assert all(len(i) == 18 and i.isascii() and i == i.strip() and "x" not in i for i in ids)
    _check_consistency(tmp_path / "truth", slack=0.0)  # clean data: every reference resolves
    # marriage histories make sense: nobody marries while married, divorces are of a marriage
    events = sorted((t["event_date"], t["event_type"], t["husband_id_number"], t["wife_id_number"])
                    for t in _truth(tmp_path / "truth", generate.MARRIAGE))
    spouse: dict[str, str | None] = {}
    for _, kind, h, w in events:
        if kind == "marriage":
            assert spouse.get(h) is None and spouse.get(w) is None, (h, w)
            spouse[h], spouse[w] = w, h
        elif kind == "divorce":
            assert spouse.get(h, w) == w and spouse.get(w, h) == h  # (first marriage may predate the registry)
            spouse[h] = spouse[w] = None
        else:
            assert spouse.get(h) == w


def test_incremental_feeds_deliver_only_what_is_new(tmp_path):
    lake, first = _gen(tmp_path / "lake", people=1500, date="2024-06-30")
    _, second = _gen(tmp_path / "lake", people=1500, date=DATE)
    ds = DATASETS[generate.MARRIAGE]
    recs1 = _records(first[generate.MARRIAGE]["path"], ds)
    recs2 = _records(second[generate.MARRIAGE]["path"], ds)
    assert recs1 and recs2
    assert not {r[7] for r in recs1} & {r[7] for r in recs2}  # certificate numbers
    # snapshot feeds are complete each time; the second snapshot has grown
    assert second[generate.HOUSEHOLD]["rows"] >= first[generate.HOUSEHOLD]["rows"]
    assert second[generate.BIRTH]["rows"] > 0


def test_cli_generate(tmp_path, monkeypatch):
    from govlake import cli

    monkeypatch.setenv("GOVLAKE_LAKE_ROOT", str(tmp_path / "lake"))
    rc = cli.main(["generate", "--people", "200", "--date", DATE, "--truth", str(tmp_path / "t")])
    assert rc == 0
    assert (tmp_path / "lake" / "landing" / "tax" / "taxpayer_registration" / DATE).is_dir()
    assert (tmp_path / "t" / "marriage_household_check.parquet").is_file()
    with pytest.raises(SystemExit):
        cli.main(["generate", "--people", "10", "--date", "24/11/2026"])


_RSS = """
import resource, sys
from pathlib import Path
from govlake_synth import generate
from govlake.storage import Lake
generate.generate(Lake(Path(sys.argv[2])), int(sys.argv[1]), "2026-11-24", progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_does_not_grow_with_people(tmp_path):
    """10x the people must not need anywhere near 10x the memory (rows are streamed)."""
    def peak_kib(n: int) -> int:
        out = subprocess.run([sys.executable, "-c", _RSS, str(n), str(tmp_path / f"l{n}")],
                             check=True, capture_output=True, text=True)
        return int(out.stdout.strip().splitlines()[-1])

    small, large = peak_kib(10_000), peak_kib(100_000)
    assert large < small + 40 * 1024, (small, large)  # KiB


def test_identifiers_are_unique_even_when_random_draws_collide(tmp_path, monkeypatch):
    """Force 40 people onto the same (division, birth date, sequence): IDs must still be unique."""
    real_core = generate._core

    def colliding_core(seed, c, n):
        core = real_core(seed, c, n)
        if c == 0:
            for k in core:
                core[k][1:40] = core[k][0]
        return core

    monkeypatch.setattr(generate, "_core", colliding_core)
    _, result = _gen(tmp_path / "lake", tmp_path / "truth", people=300, fault_rate=0)
    ids = [t["id_number"] for t in _truth(tmp_path / "truth", generate.HOUSEHOLD)]
    assert len(ids) == 300 == len(set(ids))
    assert sum(i[:14] == ids[0][:14] for i in ids) >= 40  # same place and birth date, other sequence
    assert all(ric.is_valid(i) for i in ids)


def test_company_codes_are_unique(gen):
    _, _, truth = gen
    for fid in (generate.ENTERPRISE, generate.TAX):
        codes = [t["uscc"] for t in _truth(truth, fid) if t["valid"]]
        assert len(codes) == len(set(codes)) > 50
