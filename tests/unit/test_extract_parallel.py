"""The parallel extraction path (worker processes decoding ranges of a large file) gives exactly
what the sequential path gives: the same raw Parquet (values, row numbers, row order, row
groups), the same quarantine reason, message and row. The thresholds are lowered so that a small
file takes the parallel path, cut into many ranges."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from concurrent.futures.process import BrokenProcessPool

from govlake import encoding, ingest
from govlake.storage import Lake

from test_extract_exact import DATE, HOUSEHOLD, PLAIN, ROW, SOCIAL, SPECIAL, _deliver, _file, _household_csv, _reference

BLOCK = 256  # JSON_BLOCK: a range = RANGE_BLOCKS blocks = 512 bytes


@pytest.fixture
def small_ranges(monkeypatch):
    monkeypatch.setattr(ingest, "JSON_BLOCK", BLOCK)
    monkeypatch.setattr(ingest, "RANGE_BLOCKS", 2)
    monkeypatch.setattr(encoding, "RANGE_BYTES", 700)
    monkeypatch.setattr(ingest, "GROUP_ROWS", 7)  # many row groups, made of the parse batches
    monkeypatch.setattr(ingest, "_workers", lambda: 2)  # two workers even on a one-CPU machine


def _extract(tmp_path, monkeypatch, name: str, ds, data: bytes, fname: str, parallel: bool) -> tuple:
    """Extract ``data`` into a fresh lake; the parallel run must really use the workers."""
    lake = Lake(tmp_path / name).ensure()
    monkeypatch.setenv("GOVLAKE_LAKE_ROOT", str(lake.root))
    path = _deliver(lake, ds, data, fname)
    monkeypatch.setattr(ingest, "PARALLEL_MIN_BYTES", 1 if parallel else 1 << 40)
    calls = []
    real = encoding.ordered_map

    def counting(pool, fn, args, inflight):
        args = list(args)
        calls.append((fn.__name__, len(args)))
        return real(pool, fn, args, inflight)

    monkeypatch.setattr(encoding, "ordered_map", counting)
    [f] = ingest.extract_dataset(ds, lake).files
    if parallel:
        assert calls and all(n > 3 for _, n in calls), calls  # several ranges, in worker processes
    else:
        assert calls == []
    parquet = sorted(lake.raw(ds.dept, ds.name).rglob("*.parquet")) if lake.raw(ds.dept, ds.name).exists() else []
    tables = []
    for p in parquet:
        pf = pq.ParquetFile(p)
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        tables.append((p.relative_to(lake.root).as_posix(), groups, pf.read().drop_columns(["_ingested_at"])))
    reason = None
    if f.status == "quarantined":
        reason = json.loads(next(lake.quarantine_files(ds.dept, ds.name).rglob("reason.json")).read_text("utf-8"))
        reason.pop("quarantined_at")
    assert not list((lake.meta_root / "extract_tmp").iterdir())
    return (f.status, f.reason, f.message, f.rows, f.encoding), tables, reason, calls, path


def _both(tmp_path, monkeypatch, ds, data: bytes, fname: str):
    seq = _extract(tmp_path, monkeypatch, "seq", ds, data, fname, parallel=False)
    par = _extract(tmp_path, monkeypatch, "par", ds, data, fname, parallel=True)
    assert par[0] == seq[0]  # status, reason, message, rows, encoding
    assert par[2] == seq[2]  # reason.json: row, byte offset, rule, columns
    assert [(n, g) for n, g, _ in par[1]] == [(n, g) for n, g, _ in seq[1]]  # files and row groups
    for (_, _, a), (_, _, b) in zip(par[1], seq[1]):
        assert a.equals(b)  # every value and row number, in order
    return seq, par


@pytest.mark.parametrize("codec", ["utf-8", "utf-8-sig", "gb18030"])
def test_parallel_jsonl_equals_sequential(tmp_path, monkeypatch, small_ranges, codec):
    text = _file(PLAIN[:3] + ["", "   "] + PLAIN[3:] + SPECIAL + PLAIN * 4, "\n")
    text += _file(PLAIN[:2] + SPECIAL[-1:] + PLAIN * 3, "\r\n") + _file(PLAIN * 5 + SPECIAL + PLAIN * 3)
    text += "\n\n" + PLAIN[0]  # blank lines, a last line without newline
    seq, par = _both(tmp_path, monkeypatch, SOCIAL, text.encode(codec), "si.jsonl")
    assert seq[0][0] == "ingested" and seq[0][3] == len(_reference(text.encode(codec), SOCIAL.column_names))
    assert sum(sum(g) for _, g, _ in seq[1]) == seq[0][3] and len(seq[1][0][1]) > 5
    names = {fn for fn, _ in par[3]}
    assert names == ({"_decode_range", "_jsonl_range"})


@pytest.mark.parametrize("bad, rule", [
    ('{"aac002":"1",}', "parse.invalid_json"),
    ('[{"aac002":"1"}]', "parse.invalid_json"),
    ('{"aac002":"1","备注":"x"}', "contract.unexpected_column"),
])
def test_parallel_jsonl_bad_line_in_a_later_range(tmp_path, monkeypatch, small_ranges, bad, rule):
    lines = PLAIN * 8 + ["", '{"aac002":"cr"}\r{"aac002":"x"}'] + PLAIN * 3 + [bad] + PLAIN * 4 + [bad]
    data = _file(lines).encode("utf-8")
    bad_row = lines.index(bad) + 2  # the lone CR counts as a line end
    assert data.index(bad.encode()) > 4 * ingest.RANGE_BLOCKS * BLOCK  # not in the first ranges
    seq, par = _both(tmp_path, monkeypatch, SOCIAL, data, "si.jsonl")
    source = str(seq[4].relative_to(tmp_path / "seq" / "landing"))
    assert (seq[0][0], seq[0][1]) == ("quarantined", rule)
    assert seq[0][2].startswith(f"{source}: row {bad_row}: rule {rule}: ")
    assert seq[2]["row"] == bad_row and par[1] == seq[1] == []


def test_parallel_gb18030_transcoding_equals_sequential(tmp_path, monkeypatch, small_ranges):
    rows = [[f"{i:018d}"] + ROW[1:] for i in range(60)]
    seq, par = _both(tmp_path, monkeypatch, HOUSEHOLD, _household_csv(rows).encode("gb18030"), "hh.csv")
    assert seq[0][:2] == ("ingested", None) and seq[0][3:] == (60, "gb18030")
    assert [fn for fn, _ in par[3]] == ["_decode_range", "_decode_range"]  # UTF-8 fails, GB18030 decodes


@pytest.mark.parametrize("bad", [b"\x80\xff", b"\x81", b"\xfe\x39"])
def test_parallel_undecodable_byte_in_a_later_range(tmp_path, monkeypatch, small_ranges, bad):
    rows = _household_csv([ROW] * 40).encode("gb18030")
    data = rows + b"1," + bad + b"\r\n" + _household_csv([ROW] * 10).encode("gb18030").split(b"\r\n", 1)[1]
    assert len(rows) > 5 * encoding.RANGE_BYTES
    seq, par = _both(tmp_path, monkeypatch, HOUSEHOLD, data, "hh.csv")
    assert (seq[0][0], seq[0][1]) == ("quarantined", "encoding.undecodable")
    assert seq[2]["row"] == 42 and "line 42" in seq[0][2], seq[0][2]
    assert seq[2]["byte_offset"] == len(rows) + 2


def test_utf8_jsonl_with_a_bad_byte_late_goes_on_to_gb18030_as_sequentially(tmp_path, monkeypatch, small_ranges):
    data = _file(PLAIN * 10).encode("utf-8") + b'{"aac002":"\xb0\xa1"}\n' + _file(PLAIN * 3).encode("utf-8")
    seq, par = _both(tmp_path, monkeypatch, SOCIAL, data, "si.jsonl")
    assert seq[0][0] == "quarantined" or seq[0][4] == "gb18030"


def test_broken_pool_falls_back_to_the_sequential_path(tmp_path, monkeypatch, small_ranges):
    class Broken:
        def submit(self, *a, **k):
            raise BrokenProcessPool("no workers")

        def shutdown(self, *a, **k):
            pass

    import contextlib

    monkeypatch.setattr(ingest, "_worker_pool", lambda path: contextlib.nullcontext(Broken()))
    data = _file(PLAIN * 12).encode("utf-8")
    lake = Lake(tmp_path / "b").ensure()
    _deliver(lake, SOCIAL, data, "si.jsonl")
    [f] = ingest.extract_dataset(SOCIAL, lake).files
    assert (f.status, f.rows) == ("ingested", len(PLAIN) * 12)
    assert DATE in f.source_file
