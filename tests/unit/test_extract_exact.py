"""Extraction keeps every value exactly as delivered: JSON Lines against the stdlib reference
(``json.loads(line, parse_int=str, parse_float=str)``), transcoded GB18030 files, and the
quarantine messages that name the file and row."""

from __future__ import annotations

import io
import json

import duckdb
import pytest

from govlake import ingest, metadata

SOCIAL = metadata.dataset("human_resources.social_insurance")
HOUSEHOLD = metadata.dataset("public_security.household_registration")
DATE = "2026-11-20"

# lines the fast (msgspec) path must decode exactly as the reference does
PLAIN = [
    '{"aac002":110105194912310021,"aac003":"张三","aac004":1,"aab998":null,"aae140":"110","aae030":202305,"aac008":true}',
    '{"aac002":"11010519491231002X","aac003":"李四","aac004":"2","aab998":"91350200MA2YJ1XR9G","aae140":"310",'
    '"aae030":"202305","aac008":false}',
    '{"aac002":1.10105E+17,"aac003":12.50,"aac004":1e5,"aab998":-0.0,"aae140":1E-5,"aae030":5e-400,"aac008":1e400}',
    '{"aac002":0,"aac003":-1,"aac004":123456789012345678901234567890,"aab998":-9223372036854775809,'
    '"aae140":18446744073709551616,"aae030":-10,"aac008":100}',
    '{"aac002":"\\u4e2d\\u6587","aac003":"\\ud83d\\ude00","aac004":"a\\"b\\\\c\\/d","aab998":"\\t\\n\\r\\b\\f",'
    '"aae140":"䶮𠀀镕喆","aae030":"阿卜杜拉·艾山","aac008":""}',
    '{"aac002":"only one field"}',
    '{"aac002":"1","aac002":2,"aac003":"dup keys: the last wins"}',
    '  { "aac002" : "spaces" , "aac003" : 7 }  \t',
    '{}',
    '{"aac002":"2023-05-01","aac003":"-0 inside a string","aac004":"a-0","aae140":"\u007f"}',
]
# lines only the reference (stdlib) path handles exactly: the block goes that way
SPECIAL = [
    '{"aac002":-0,"aac003":"an int -0 stays -0"}',
    '{"aac002":"x:-0","aac003":"x,-0 (no -0 here, but the screen cannot tell)"}',
    '{"aac002":[1,2.50,{"k":"中","n":-0,"t":true}],"aac003":{"a":null,"b":[]},"aac004":[]}',
    '{"aac002":NaN,"aac003":Infinity,"aac004":-Infinity}',
    "\u3000",  # whitespace-only (Unicode): a blank line for str.strip()
    '{"aac002":"cr"}\r{"aac002":"a lone CR ends a line too"}',
]


def _reference(data: bytes, columns: list[str]) -> list[list]:
    """Values and row numbers as the text-mode stdlib reader gives them."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030")

    def value(v):
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v, ensure_ascii=False)

    out = []
    for i, line in enumerate(io.StringIO(text, newline=""), start=1):
        if line.strip():
            obj = json.loads(line, parse_int=str, parse_float=str)
            out.append([value(obj.get(c)) for c in columns] + [i])
    return out


def _deliver(lake, ds, data: bytes, name: str, date: str = DATE):
    d = lake.landing(ds.dept, ds.name, date)
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)
    return d / name


def _raw(lake, ds) -> list[list]:
    cols = ", ".join(f'"{c}"' for c in ds.column_names)
    return [list(r) for r in duckdb.sql(
        f"select {cols}, _row_number from read_parquet('{lake.raw_glob(ds.dept, ds.name)}') order by _row_number"
    ).fetchall()]


def _file(lines: list[str], eol: str = "\n") -> str:
    return eol.join(lines) + eol


@pytest.mark.parametrize("block", [None, 64, 300])
@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "gb18030"])
def test_jsonl_values_equal_the_stdlib_reference(lake, monkeypatch, codec, block):
    if block:
        monkeypatch.setattr(ingest, "JSON_BLOCK", block)  # many blocks, each decided on its own
    text = _file(PLAIN[:3] + ["", "   "] + PLAIN[3:] + SPECIAL + PLAIN, "\n")
    text += _file(PLAIN[:2], "\r\n") + PLAIN[0]  # CRLF lines, and a last line without newline
    data = text.encode(codec)
    _deliver(lake, SOCIAL, data, "si.jsonl")
    res = ingest.extract_dataset(SOCIAL, lake)
    assert res.summary()["quarantined"] == 0, res.summary()
    expected = _reference(data, SOCIAL.column_names)
    assert _raw(lake, SOCIAL) == expected
    # (a nested value is re-dumped from the parse_int/parse_float=str objects: its numbers become
    # JSON strings -- the behaviour kept, not endorsed)
    assert ["-0", '["1", "2.50", {"k": "中", "n": "-0", "t": true}]', "NaN", "Infinity", "-Infinity"] == [
        expected[len(PLAIN)][0], expected[len(PLAIN) + 2][0], expected[len(PLAIN) + 3][0],
        expected[len(PLAIN) + 3][1], expected[len(PLAIN) + 3][2]]
    assert ["110105194912310021", "1.10105E+17", "12.50", "1e5", "-0.0"] == [
        expected[0][0], expected[2][0], expected[2][1], expected[2][2], expected[2][3]]
    assert not list((lake.meta_root / "extract_tmp").iterdir())  # the UTF-8 copy is removed


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_plain_lines_take_the_fast_path(lake, monkeypatch, eol):
    def no_fallback(self, block, lineno):
        raise AssertionError(f"block at line {lineno + 1} went the stdlib way")

    monkeypatch.setattr(ingest._JsonlReader, "_stdlib_batches", no_fallback)
    monkeypatch.setattr(ingest, "JSON_BLOCK", 500)
    data = ("\ufeff" + _file(PLAIN * 5 + [" ", ""] + PLAIN, eol)).encode("utf-8")
    _deliver(lake, SOCIAL, data, "si.jsonl")
    assert ingest.extract_dataset(SOCIAL, lake).summary()["quarantined"] == 0
    assert _raw(lake, SOCIAL) == _reference(data, SOCIAL.column_names)


@pytest.mark.parametrize("bad, rule, why", [
    ('{"aac002":"1",}', "parse.invalid_json", None),
    ('{"aac002":"1"} {"aac002":"2"}', "parse.invalid_json", None),
    ('{"aac002":01}', "parse.invalid_json", None),
    ('{"aac002":"\x01"}', "parse.invalid_json", None),
    ('[{"aac002":"1"}]', "parse.invalid_json", "not a JSON object"),
    ('{"aac002":"1","备注":"x"}', "contract.unexpected_column", "unexpected field(s) ['备注']"),
])
def test_bad_jsonl_line_is_named(lake, monkeypatch, bad, rule, why):
    monkeypatch.setattr(ingest, "JSON_BLOCK", 400)
    lines = PLAIN * 3 + [bad] + PLAIN
    bad_row = len(PLAIN) * 3 + 1
    path = _deliver(lake, SOCIAL, _file(lines).encode("utf-8"), "si.jsonl")
    res = ingest.extract_dataset(SOCIAL, lake)
    [f] = res.files
    source = str(path.relative_to(lake.landing_root))
    if why is None:
        with pytest.raises(json.JSONDecodeError) as e:
            json.loads(bad, parse_int=str, parse_float=str)
        why = str(e.value)
    assert (f.status, f.reason) == ("quarantined", rule)
    assert f.message == f"{source}: row {bad_row}: rule {rule}: {why}"
    reason = json.loads(next(lake.quarantine_files(SOCIAL.dept, SOCIAL.name).rglob("reason.json")).read_text("utf-8"))
    assert reason["row"] == bad_row and reason["rule"] == rule
    assert not lake.raw(SOCIAL.dept, SOCIAL.name).exists() or not list(
        lake.raw(SOCIAL.dept, SOCIAL.name).rglob("*.parquet"))


def _household_csv(rows: list[list[str]], header: list[str] | None = None) -> str:
    return "\r\n".join(",".join(r) for r in [header or HOUSEHOLD.column_names, *rows]) + "\r\n"


ROW = ["11010519491231002X", "䶮𠀀镕", "男", "汉族", "19491231", "北京市东城区东华门街道1号", "110101", "已婚", "", "20000101"]


def test_gb18030_csv_read_from_one_utf8_transcoding(lake):
    rows = [ROW, [f"{i:018d}" for i in range(10)], ["", "" ,"", "", "", "", "", "", "", ""], ROW]
    data = _household_csv(rows).encode("gb18030")
    _deliver(lake, HOUSEHOLD, data, "hh.csv")
    [f] = ingest.extract_dataset(HOUSEHOLD, lake).files
    assert (f.status, f.encoding, f.rows) == ("ingested", "gb18030", 4)
    assert _raw(lake, HOUSEHOLD) == [r + [i] for i, r in enumerate(rows, start=1)]
    assert not list((lake.meta_root / "extract_tmp").iterdir())


def test_gb18030_malformed_row_names_the_landing_file(lake):
    data = _household_csv([ROW, ROW, ROW[:-1], ROW]).encode("gb18030")
    path = _deliver(lake, HOUSEHOLD, data, "hh.csv")
    [f] = ingest.extract_dataset(HOUSEHOLD, lake).files
    source = str(path.relative_to(lake.landing_root))
    assert (f.status, f.reason) == ("quarantined", "parse.malformed_row")
    assert f.message.startswith(f"{source}: row 3: rule parse.malformed_row: has 9 fields, the header has 10")
    assert "extract_tmp" not in f.message and ".utf8" not in f.message
    assert not list((lake.meta_root / "extract_tmp").iterdir())


def test_undecodable_byte_wins_over_a_bad_header(lake):
    """The encoding is checked (and the file transcoded) before the header is read, as before."""
    header = [c for c in HOUSEHOLD.column_names if c != "婚姻状况"]
    data = _household_csv([ROW[:-1]] * 3, header).encode("gb18030") + b"\x80\xff\n"
    _deliver(lake, HOUSEHOLD, data, "hh.csv")
    [f] = ingest.extract_dataset(HOUSEHOLD, lake).files
    assert (f.status, f.reason) == ("quarantined", "encoding.undecodable")
    assert "line 5" in f.message
    assert not list((lake.meta_root / "extract_tmp").iterdir())


def test_fast_path_never_disagrees_with_the_reference():
    """Differential check, line by line, over generated near-JSON: whatever the msgspec path
    accepts it must decode exactly as the stdlib reference; what it rejects goes the stdlib way."""
    import random

    cols = ["a", "b", "c"]
    reader = ingest._JsonlReader(cols, "x")
    atoms = ["0", "-0", "1", "-1", "12.50", "1e5", "1E+05", "1e05", "-0.0", "1.10105E+17", "1" * 30, "true", "false",
             "null", '"x"', '"中"', '"\\u4e2d"', '"\\ud83d\\ude00"', '"a\\"b"', '"\\/"', '"\x7f"', '"\u2028"', "[]",
             "{}", '[1,"2"]', '{"k":-0}']
    bad_atoms = ['"\\ud800"', "NaN", "Infinity", "-Infinity", "+1", ".5", "1.", "01", "-01", "1e", "0x10", '"\\a"',
                 '"\\u00G0"', '"\x01"', "True", "nul", '"', "'x'", "--1", '"\\x41"']
    bad_ws = ["\x0c", "\x0b", "\u3000", "\xa0", "\x1c", "\x85"]
    keys = ['"a"', '"b"', '"c"', '"\\u0061"']
    bad_keys = ['"d"', "a", '""']
    rnd = random.Random(11)

    def reference(line):
        try:
            obj = json.loads(line, parse_int=str, parse_float=str)
        except json.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or any(k not in cols for k in obj):
            return None
        return [None if v is None else v if isinstance(v, str) else ("true" if v else "false")
                if isinstance(v, bool) else json.dumps(v, ensure_ascii=False) for v in map(obj.get, cols)]

    def pick(good, bad, p_bad=0.03):
        return rnd.choice(bad) if rnd.random() < p_bad else rnd.choice(good)

    def ws():
        return pick(["", "", " ", "\t", " \t"], bad_ws)

    accepted = 0
    for _ in range(20_000):
        parts = [ws() + pick(keys, bad_keys) + ws() + ":" + ws() + pick(atoms, bad_atoms) + ws()
                 for _ in range(rnd.randint(0, 3))]
        line = "{" + pick([","], [",,", "", ";"]).join(parts) + "}"
        if rnd.random() < 0.05:
            line = ws() + line + rnd.choice([",", " {}", "}", "x", "", *bad_ws])
        data = line.encode("utf-8", "surrogatepass")
        if not data.strip():
            continue
        rb = reader._fast(data + b"\n", [data], 0)
        if rb is None:
            continue
        accepted += 1
        assert rb.num_rows == 1 and rb.column(3).to_pylist() == [1]
        assert [rb.column(i)[0].as_py() for i in range(3)] == reference(line), line
    assert accepted > 5_000  # the check covers the fast path, not only its fallbacks
