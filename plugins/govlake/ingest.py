"""Extraction: landing deliveries -> raw Parquet (values as delivered, plus lineage).

For one dataset: find files under ``landing/<dept>/<dataset>/<date>/`` matching the dataset's
pattern, identify each by SHA-256 in the ledger (already seen -> skipped), decode strictly
(utf-8-sig, then gb18030), check the contract (columns by name), parse CSV or JSON Lines in
streaming batches and write ``raw/<dept>/<dataset>/<batch_id>/part-00000.parquet``. A file
that cannot be read goes to ``quarantine/files/...`` with a machine-readable ``reason.json``;
the other files proceed.

The landing zone is read without following any symbolic link (``scan_top``, ``scan_dataset``,
``_open_landing_file``: openat with O_NOFOLLOW, scandir on descriptors, a file's bytes read
through ``/proc/<pid>/fd/<fd>`` of the inode opened). What extraction refuses -- symlinks,
folders of undeclared departments or datasets, folders not named YYYY-MM-DD or dated in the
future, misplaced files -- is a landing anomaly (``govlake.landing``): recorded once per path,
listed in the summary's ``problems``, a symlink inside a dataset's folder also in the file
quarantine (its reason.json only); nothing is ingested from it.

A large file (``PARALLEL_MIN_BYTES``) is decoded by a few worker processes (``_worker_pool``,
'spawn' start method: no fork of a threaded parent): its encoding check / GB18030 transcoding
(``encoding.detect_file``) and, for JSON Lines, the parse, in ranges of whole lines that the
parent writes in file order. The ranges start at the sequential reader's block boundaries, so
the record batches, row numbers, row groups and error messages are the sequential path's.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import errno
import fnmatch
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import operator
import os
import re
import shutil
import stat
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PosixPath
from typing import Any, Generator, Iterable, Iterator

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from govlake import encoding as enc
from govlake import metadata, xlsx
from govlake.contract import ContractError, ParseError, check_contract  # noqa: F401 (re-exported)
from govlake.ledger import Delivery, Ledger
from govlake.metadata import Dataset
from govlake import clock
from govlake.landing import TOP_SCOPE, LandingAnomaly, record_scan as landing_record_scan
from govlake.storage import Lake, atomic_write_text, exclusive_lock, sha256_file  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

LINEAGE = ["_batch_id", "_source_file", "_source_sha256", "_row_number", "_ingested_at", "_delivery_date"]
CSV_BLOCK = 16 << 20  # bytes of CSV per streaming batch
JSON_BLOCK = 2 << 20  # bytes of JSON Lines per parse batch (small: fewer page faults than 32 MB)
JSON_BATCH = 200_000  # lines of JSON per batch on the stdlib (reference) path
ROW_GROUP = 1_000_000
GROUP_ROWS = 250_000  # parse batches are collected up to this many rows per Parquet row group
PARALLEL_MIN_BYTES = 256 << 20  # a file at least this large is decoded by worker processes
RANGE_BLOCKS = 16  # JSON Lines: a worker parses ranges of this many JSON_BLOCKs (32 MB)
MAX_WORKERS = 4  # at most this many worker processes (and never more than the usable CPUs)


@dataclass
class FileResult:
    source_file: str
    sha256: str
    status: str  # ingested | skipped | quarantined
    batch_id: str | None = None
    rows: int = 0
    encoding: str | None = None
    reason: str | None = None
    message: str | None = None
    supersedes: str | None = None


@dataclass
class DatasetResult:
    dataset: str
    files: list[FileResult] = field(default_factory=list)
    anomalies: list[LandingAnomaly] = field(default_factory=list)  # landing entries refused (not ingested)

    @property
    def ingested(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "ingested"]

    def summary(self) -> dict:
        return {
            "dataset": self.dataset,
            "files": len(self.files),
            "ingested_files": len(self.ingested),
            "rows": sum(f.rows for f in self.ingested),
            "skipped": sum(1 for f in self.files if f.status == "skipped"),
            "quarantined": sum(1 for f in self.files if f.status == "quarantined"),
            "new_batches": [f.batch_id for f in self.ingested],
            "problems": [
                {"file": f.source_file, "reason": f.reason, "message": f.message}
                for f in self.files if f.status == "quarantined"
            ] + [a.problem() for a in self.anomalies],
            "landing_anomalies": len(self.anomalies),
        }


def batch_id_for(delivery_date: str, sha256: str) -> str:
    return f"{delivery_date.replace('-', '')}-{sha256[:16]}"


# --------------------------------------------------------------------------------- parsing
def _csv_header(path: Path, encoding: str, data: Path | None = None) -> list[str]:
    """``data``: where to read ``path``'s text from instead (its UTF-8 transcoding; messages
    still name ``path``)."""
    with open(data or path, "r", encoding="utf-8" if data else encoding, newline="") as fh:
        try:
            header = next(csv.reader(fh))
        except StopIteration:
            raise ParseError("file.empty", f"{path}: rule file.empty: the file has no header row", row=1)
    return [h.strip() for h in header]


def _locate_bad_csv_row(path: Path, encoding: str, ncols: int) -> tuple[int, str]:
    with open(path, "r", encoding=encoding, newline="") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for i, rec in enumerate(reader, start=1):
            if len(rec) != ncols:
                return i, f"has {len(rec)} fields, the header has {ncols}"
    return 0, "unparseable CSV"


def iter_csv(path: Path, encoding: str, header: list[str], data: Path | None = None) -> Iterator[pa.RecordBatch]:
    """Stream record batches of strings; '' stays '' (as delivered). ``data``: read the text
    from this UTF-8 transcoding of ``path`` (decoded once by ``encoding.detect_file``)."""
    if data is not None:
        path_read, encoding = data, "utf-8"
    else:
        path_read = path
    codec = "utf-8" if encoding == "utf-8-sig" else encoding  # Arrow skips the UTF-8 BOM itself
    ro = pacsv.ReadOptions(encoding=codec, block_size=CSV_BLOCK, column_names=header, skip_rows=1)
    po = pacsv.ParseOptions(newlines_in_values=True)
    co = pacsv.ConvertOptions(
        column_types={h: pa.string() for h in header},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        null_values=[],
    )
    try:  # (open_csv parses the first block already: a bad row there is reported the same way)
        reader = pacsv.open_csv(path_read, read_options=ro, parse_options=po, convert_options=co)
        for b in reader:
            yield b
    except pa.ArrowInvalid as e:
        row, why = _locate_bad_csv_row(path_read, encoding, len(header))
        raise ParseError("parse.malformed_row", f"{path}: row {row}: rule parse.malformed_row: {why} ({e})", row=row)


def _jsonl_value(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if type(v) is int:  # (msgspec path: JSON ints arrive as int) the text json.dumps gives, cheaper
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def _jsonl_object(line: str, lineno: int, source: str, colset: set[str]) -> dict:
    try:
        obj = json.loads(line, parse_int=str, parse_float=str)
    except json.JSONDecodeError as e:
        raise ParseError("parse.invalid_json", f"{source}: row {lineno}: rule parse.invalid_json: {e}", row=lineno)
    if not isinstance(obj, dict):
        raise ParseError("parse.invalid_json", f"{source}: row {lineno}: rule parse.invalid_json: not a JSON object", row=lineno)
    extra = [k for k in obj if k not in colset]
    if extra:
        raise ContractError("contract.unexpected_column",
                            f"{source}: row {lineno}: rule contract.unexpected_column: unexpected field(s) {extra}",
                            row=lineno, columns=extra)
    return obj


# an int literal -0 as a value (msgspec returns int 0 for it, whose str() is "0"): such a block goes
# the stdlib way (the pattern may also match inside a string: that costs time, not exactness)
_NEG_ZERO = re.compile(rb"[:\[,][ \t\r\n]*-0(?![0-9.eE])")


class _JsonlReader:
    """JSON Lines -> record batches of strings; every value exactly as the stdlib reference
    (``json.loads(line, parse_int=str, parse_float=str)``, then ``_jsonl_value``) gives it.

    The file is read in blocks of whole lines (bytes). A block takes the fast path: msgspec
    decodes each non-blank line on its own into a struct of the declared columns (an unknown
    field, a non-object line or invalid JSON fails it), floats come back as their literal text
    (``float_hook=str``), ints as Python ints whose ``str()`` is the literal (JSON ints have no
    '+' and no leading zeros; ``-0`` is screened out above), true/false/null as stdlib does.
    Anything the fast path does not handle exactly as the reference does -- a line that does not
    decode, a nested array/object value, a lone CR (the stdlib reader splits lines at it), a
    possible ``-0`` -- sends the whole block the reference way (``_stdlib_batches``), which
    yields the same values or raises naming the first bad line, as before."""

    def __init__(self, columns: list[str], source: str, batch: int | None = None):
        self.batch = batch or JSON_BATCH
        self.lineno = 0  # lines read so far
        self.columns = columns
        self.source = source
        self.colset = set(columns)
        self.schema = pa.schema([(c, pa.string()) for c in columns])
        fields = [f"f{i}" for i in range(len(columns))]
        row = msgspec.defstruct("JsonlRow", [(f, Any, None) for f in fields], rename=dict(zip(fields, columns)),
                                forbid_unknown_fields=True, gc=False)
        self.decoder = msgspec.json.Decoder(row, float_hook=str)
        self.getters = [operator.attrgetter(f) for f in fields]
        self.stdlib = json.JSONDecoder(parse_int=str, parse_float=str)

    def batches(self, path: Path, strip_bom: bool, start: int = 0, end: int | None = None,
                block: int | None = None) -> Iterator[pa.RecordBatch]:
        """``start``/``end``: only the lines in that byte range (``start`` a block boundary of the
        whole file's reading, see ``_line_blocks``); line numbers then count from ``start``."""
        self.lineno = 0  # lines before the current block
        for blk in _line_blocks(path, strip_bom, start, end, block):
            lines = blk.split(b"\n")
            if not lines[-1]:
                lines.pop()  # the block ends with a newline
            rb = self._fast(blk, lines, self.lineno)
            if rb is None:  # (a lone CR ends a line there, so it counts the lines itself)
                self.lineno = yield from self._stdlib_batches(blk, self.lineno)
                continue
            if rb.num_rows:
                yield rb
            self.lineno += len(lines)

    def _fast(self, block: bytes, lines: list[bytes], lineno: int) -> pa.RecordBatch | None:
        cr = block.count(b"\r")
        if (cr and cr != block.count(b"\r\n")) or _NEG_ZERO.search(block):
            return None
        texts = [t for t in lines if t.strip()]  # blank = ASCII whitespace only, else msgspec fails
        if len(texts) == len(lines):
            numbers = pa.array(np.arange(lineno + 1, lineno + len(lines) + 1, dtype=np.int64))
        else:
            numbers = pa.array([i for i, t in enumerate(lines, start=lineno + 1) if t.strip()], pa.int64())
        try:
            objs = list(map(self.decoder.decode, texts))
        except Exception:  # noqa: BLE001 - whatever msgspec rejects, the reference path decides
            return None
        arrays = []
        for get in self.getters:
            vals = list(map(get, objs))
            try:
                arrays.append(pa.array(vals, pa.string()))  # accepts str and None only
                continue
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                pass
            if not {type(v) for v in vals} <= {str, type(None), int, bool}:
                return None  # nested array/object: re-dumped by the reference path
            arrays.append(pa.array([_jsonl_value(v) for v in vals], pa.string()))
        rb = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        return rb.append_column("_line", numbers)

    def _stdlib_batches(self, block: bytes, lineno: int) -> Generator[pa.RecordBatch, None, int]:
        """The reference: text lines split as the text-mode file reader splits them (universal
        newlines, untranslated), one ``JSONDecoder.decode`` of ``[line,line,...]`` per batch,
        line by line (naming the first bad line) if that fails or yields anything else than one
        object per line with known fields; blank lines skipped, row numbers = line numbers.
        Returns the line number of the block's last line."""
        fh = io.StringIO(block.decode("utf-8"), newline="")
        while True:
            lines = list(itertools.islice(fh, self.batch))
            if not lines:
                return lineno
            numbers, texts = [], []
            for i, line in enumerate(lines, start=lineno + 1):
                if line.strip():
                    numbers.append(i)
                    texts.append(line)
            lineno += len(lines)
            if not texts:
                continue
            try:
                objs = self.stdlib.decode("[" + ",".join(texts) + "]")
                ok = len(objs) == len(texts) and all(type(o) is dict and self.colset.issuperset(o) for o in objs)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                objs = [_jsonl_object(t, i, self.source, self.colset) for i, t in zip(numbers, texts)]
            cols = {c: [_jsonl_value(o.get(c)) for o in objs] for c in self.columns}
            cols["_row_number"] = numbers
            yield _json_batch(cols, self.columns, self.schema)


def _line_blocks(path: Path, strip_bom: bool, start: int = 0, end: int | None = None,
                 block: int | None = None) -> Iterator[bytes]:
    """The file's bytes in blocks of about JSON_BLOCK ending after a LF (the last block may not).

    The file is read in chunks ending at multiples of ``block`` (JSON_BLOCK); a block ends after
    the last LF of the chunks read so far, so every block boundary is "just after the last LF
    before a multiple of ``block``". ``start``/``end``: the blocks of that byte range only,
    ``start`` being such a boundary (or 0) and ``end`` one or the file's size -- they are then the
    very blocks the whole file's reading gives there."""
    block = block or JSON_BLOCK
    rest = b""
    with open(path, "rb") as fh:
        fh.seek(start)
        pos = start
        first = True
        while True:
            n = block - pos % block
            if end is not None:
                n = min(n, end - pos)
            chunk = fh.read(n) if n > 0 else b""
            pos += len(chunk)
            if first:
                first = False
                if strip_bom and start == 0 and chunk.startswith(codecs.BOM_UTF8):
                    chunk = chunk[len(codecs.BOM_UTF8):]
            if not chunk:
                if rest:
                    yield rest
                return
            buf = rest + chunk if rest else chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                rest = buf
                continue
            rest = buf[cut:]
            yield buf[:cut]


def iter_jsonl(path: Path, encoding: str, columns: list[str], source: str,
               data: Path | None = None, pool: Executor | None = None,
               parts: str | None = None) -> Iterator[pa.RecordBatch]:
    """JSON Lines; numbers come back as the exact text delivered (as stdlib ``json`` with
    parse_int/parse_float=str gives them; see ``_JsonlReader``). Row numbers are the file's
    line numbers; blank lines are skipped. ``data``: the UTF-8 transcoding of ``path`` (a
    GB18030 file, decoded once by ``encoding.detect_file``); else ``path`` must be UTF-8.
    ``pool``: parse ranges of the file in these worker processes (``_parallel_jsonl``), which
    hand their batches over in the files ``<parts>N`` (removed once mapped)."""
    if data is None and encoding != "utf-8-sig":
        raise ValueError(f"{path}: {encoding} JSON Lines need their UTF-8 transcoding (data=)")
    if pool is not None:
        if parts is None:
            raise ValueError("parallel JSON Lines need a path prefix for the workers' files (parts=)")
        yield from _parallel_jsonl(data or path, columns, source, data is None, pool, parts)
    else:
        yield from _JsonlReader(columns, source).batches(data or path, strip_bom=data is None)


def _jsonl_range(path: str, start: int, end: int, columns: list[str], source: str, strip_bom: bool,
                 block: int, batch: int, out: str) -> tuple[int, tuple | None]:
    """Worker: the record batches of the lines in ``[start, end)`` (line numbers counted from
    ``start``) as one Arrow IPC stream in the file ``out`` (the parent maps it: no copy through a
    pipe); returns the number of lines read and the error that stopped the range if any:
    (class name, rule, local row, message after "row N: ", columns)."""
    reader = _JsonlReader(columns, source, batch)
    sink = pa.OSFile(out, "wb")
    err = None
    with pa.ipc.new_stream(sink, reader.schema.append(pa.field("_line", pa.int64()))) as w:
        try:
            for rb in reader.batches(Path(path), strip_bom, start, end, block):
                w.write_batch(rb)
        except (ContractError, ParseError) as e:
            prefix, msg = f"{source}: row {e.row}: ", str(e)
            if e.row is None or not msg.startswith(prefix):
                raise  # (the JSON Lines reader raises none such; the parent would see it as is)
            err = (type(e).__name__, e.rule, e.row, msg[len(prefix):], getattr(e, "columns", []))
    sink.close()
    return reader.lineno, err


def _parallel_jsonl(path: Path, columns: list[str], source: str, strip_bom: bool,
                    pool: Executor, parts: str) -> Iterator[pa.RecordBatch]:
    """The sequential reader's record batches, parsed by ``pool`` in ranges of RANGE_BLOCKS
    blocks: each range starts at a block boundary, so its blocks (and the batches, fast or
    stdlib path, decided per block) are the sequential ones; the parent adds the lines of the
    ranges before to the row numbers, and to the row of an error."""
    ranges = enc.line_ranges(path, JSON_BLOCK * RANGE_BLOCKS)
    args = [(str(path), s, e, columns, source, strip_bom, JSON_BLOCK, JSON_BATCH, f"{parts}{i}")
            for i, (s, e) in enumerate(ranges)]
    offset = 0
    with contextlib.closing(enc.ordered_map(pool, _jsonl_range, args, 2 * _workers())) as results:
        for (nlines, err), a in zip(results, args):
            src = pa.memory_map(a[-1])  # the batches' buffers keep the mapping alive, not the file
            os.unlink(a[-1])
            for rb in pa.ipc.open_stream(src):
                if offset:
                    i = rb.schema.get_field_index("_line")
                    rb = rb.set_column(i, rb.schema.field(i), pc.add(rb.column(i), offset))
                yield rb
            if err is not None:
                kind, rule, row, rest, cols = err
                msg = f"{source}: row {row + offset}: {rest}"
                if kind == "ContractError":
                    raise ContractError(rule, msg, row=row + offset, columns=cols)
                raise ParseError(rule, msg, row=row + offset)
            offset += nlines


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


@contextlib.contextmanager
def _worker_pool(path: Path) -> Iterator[Executor | None]:
    """Worker processes for a large file, else None (the sequential path). 'spawn': the parent
    may be a threaded Airflow task process (fork would copy held locks); a daemonic process
    may not have children, so it keeps the sequential path."""
    n = _workers()
    if n < 2 or path.stat().st_size < PARALLEL_MIN_BYTES or multiprocessing.current_process().daemon:
        yield None
        return
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _json_batch(cols, columns, schema) -> pa.RecordBatch:
    arrays = [pa.array(cols[c], pa.string()) for c in columns]
    rb = pa.RecordBatch.from_arrays(arrays, schema=schema)
    # carry the true line numbers (blank lines are skipped) in schema metadata-free side column
    return rb.append_column("_line", pa.array(cols["_row_number"], pa.int64()))


def jsonl_missing_columns(ds: Dataset, path: Path, encoding: str, source: str, data: Path | None = None) -> None:
    """A field that never appears in any record is a missing column."""
    seen: set[str] = set()
    with open(data or path, "r", encoding="utf-8" if data else encoding) as fh:
        for line in fh:
            if line.strip():
                try:
                    seen.update(json.loads(line).keys())
                except (json.JSONDecodeError, AttributeError):
                    continue
            if len(seen) >= len(ds.column_names):
                break
    missing = [c for c in ds.column_names if c not in seen]
    if missing:
        raise ContractError("contract.missing_column",
                            f"{source}: rule contract.missing_column: field(s) {missing} never appear",
                            columns=missing)


# --------------------------------------------------------------------------------- writing
def _write_batches(batches: Iterator[pa.RecordBatch], out_dir: Path, columns: list[str], *, batch_id: str,
                   source_file: str, sha: str, ingested_at: dt.datetime, delivery_date: str) -> int:
    schema = pa.schema(
        [(c, pa.string()) for c in columns]
        + [("_batch_id", pa.string()), ("_source_file", pa.string()), ("_source_sha256", pa.string()),
           ("_row_number", pa.int64()), ("_ingested_at", pa.timestamp("us", tz="UTC")),
           ("_delivery_date", pa.string())]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    lineage = [pa.scalar(batch_id, pa.string()), pa.scalar(source_file, pa.string()), pa.scalar(sha, pa.string()),
               pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), pa.scalar(delivery_date, pa.string())]
    writer = pq.ParquetWriter(out_dir / "part-00000.parquet", schema, compression="zstd")
    total = 0
    pending: list[pa.RecordBatch] = []  # small parse batches are written as row groups of >= GROUP_ROWS

    def flush() -> None:
        nonlocal total
        n = sum(b.num_rows for b in pending)
        if not n:
            return
        rownums = [b.column(b.schema.get_field_index("_line")) for b in pending if "_line" in b.schema.names]
        if len(rownums) != len(pending):
            rownums = [pa.array(np.arange(total + 1, total + n + 1, dtype=np.int64))]
        arrays = [pa.chunked_array([b.column(b.schema.get_field_index(c)) for b in pending], pa.string())
                  for c in columns] + [
            pa.repeat(lineage[0], n), pa.repeat(lineage[1], n), pa.repeat(lineage[2], n),
            pa.chunked_array(rownums, pa.int64()),
            pa.repeat(lineage[3], n), pa.repeat(lineage[4], n),
        ]
        table = pa.Table.from_arrays(arrays, schema=schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
        total += n
        pending.clear()

    try:
        buffered = 0
        for rb in batches:
            if rb.num_rows == 0:
                continue
            if pending and ("_line" in rb.schema.names) != ("_line" in pending[0].schema.names):
                flush()
            pending.append(rb)
            buffered += rb.num_rows
            if buffered >= GROUP_ROWS:
                flush()
                buffered = 0
        flush()
    finally:
        writer.close()
    return total


def _quarantine_file(lake: Lake, ds: Dataset, path: Path, res: FileResult, batch_id: str, detail: dict,
                     src: Path | None = None) -> None:
    """``src``: where to copy the bytes from (the file as opened, see ``_open_landing_file``)."""
    qdir = lake.quarantine_files(ds.dept, ds.name) / batch_id
    qdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src or path, qdir / path.name)
    atomic_write_text(qdir / "reason.json", json.dumps({
        "dept": ds.dept, "dataset": ds.name, "batch_id": batch_id, "source_file": res.source_file,
        "sha256": res.sha256, "reason": res.reason, "message": res.message,
        "quarantined_at": dt.datetime.now(dt.timezone.utc).isoformat(), **detail,
    }, ensure_ascii=False, indent=2) + "\n")


# --------------------------------------------------------------------------------- landing zone
# Extraction never follows a symbolic link: every landing folder is opened relative to its parent
# with O_NOFOLLOW (openat), listed through that descriptor without following links (scandir on a
# fd, follow_symlinks=False), and a delivered file is opened the same way; its bytes are then read
# through /proc/<pid>/fd/<fd> -- the very inode opened, whatever its path points at afterwards (a
# file swapped for a symlink after listing is refused at the open, or read as the file it was).
# Whatever is not ingested is reported as a landing anomaly (govlake.landing).
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC  # O_NONBLOCK: a FIFO cannot block the open
#: a folder dated after this many hours past UTC midnight's date is in the future everywhere on Earth
_LATEST_UTC_OFFSET = dt.timedelta(hours=14)


class LandingSymlink(OSError):
    """A component of a landing path is a symbolic link: refused, nothing read through it."""

    def __init__(self, rel: str, target: str | None):
        super().__init__(errno.ELOOP, f"landing/{rel} is a symbolic link" + (f" (-> {target})" if target else ""))
        self.rel, self.target = rel, target


class _ReadPath(PosixPath):
    """``/proc/<pid>/fd/<fd>`` of an opened landing file, named (``.name``) as the delivered file;
    worker processes open the same path and so read the same inode."""
    _logical_name: str | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self._logical_name if self._logical_name is not None else super().name


def _readlink(name: str, dir_fd: int) -> str | None:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return None


def _open_component(name: str, dir_fd: int, rel: str, flags: int = _DIR_FLAGS) -> int:
    """Open ``name`` in ``dir_fd`` without following a link; a symlink raises LandingSymlink."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                raise e from None
            if stat.S_ISLNK(st.st_mode):
                raise LandingSymlink(rel, _readlink(name, dir_fd)) from None
        raise


@contextlib.contextmanager
def _landing_dir(lake: Lake, *parts: str) -> Iterator[int]:
    """A descriptor of ``landing/<parts...>``, each component opened in the previous one with
    O_NOFOLLOW (the landing root itself is the lake's own folder)."""
    fd = os.open(lake.landing_root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        for i, p in enumerate(parts):
            nxt = _open_component(p, fd, "/".join(parts[: i + 1]))
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open_landing_file(lake: Lake, ds: Dataset, delivery_date: str, name: str
                       ) -> Iterator[tuple[_ReadPath, os.stat_result]]:
    """Open ``landing/<dept>/<dataset>/<date>/<name>`` without following any link; yields the path
    to read it through (its inode, not its name) and its fstat. A symlink anywhere raises
    LandingSymlink; a file that is no longer a regular file raises FileNotFoundError."""
    rel = f"{ds.dept}/{ds.name}/{delivery_date}/{name}"
    with _landing_dir(lake, ds.dept, ds.name, delivery_date) as dfd:
        fd = _open_component(name, dfd, rel, _FILE_FLAGS)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, f"landing/{rel} is not a regular file any more")
        proc = Path(f"/proc/{os.getpid()}/fd")
        if not proc.is_dir():
            raise RuntimeError("extraction reads landing files through /proc/<pid>/fd (Linux procfs), "
                               "which is not mounted")
        src = _ReadPath(proc / str(fd))
        src._logical_name = name
        yield src, st
    finally:
        os.close(fd)


def _anomaly(kind: str, rel: str, scope: str, message: str, **kw) -> LandingAnomaly:
    return LandingAnomaly(path=rel, kind=kind, scope=scope, message=f"landing/{rel}: rule {kind}: {message}", **kw)


def _symlink_anomaly(rel: str, scope: str, target: str | None, **kw) -> LandingAnomaly:
    return _anomaly("landing.symlink", rel, scope,
                    f"symbolic link{f' to {target}' if target else ''} refused: extraction never follows a link "
                    f"and read nothing through it", link_target=target, **kw)


def future_limit(up_to: str | None, now: dt.datetime | str | None = None) -> str:
    """Delivery folders dated after this date are in the future: after the run's delivery date
    (``up_to``) *and* after the date it is now anywhere on Earth (UTC+14, by ``ops.clock``). A run
    for an earlier date (a backfill, a scheduler run whose logical date is the start of its
    interval) leaves later real deliveries alone: it does not ingest them, the next run does."""
    today = (clock.now(now) + _LATEST_UTC_OFFSET).date().isoformat()
    return max(up_to, today) if up_to else today


def scan_top(lake: Lake, declared: Iterable[Dataset]) -> list[LandingAnomaly]:
    """Anomalies of the landing root and the department folders (scope ``""``): symlinks,
    undeclared departments and datasets, misplaced files. Declared dataset folders are left to
    ``scan_dataset``."""
    declared = list(declared)
    depts = {d.dept for d in declared}
    names = {(d.dept, d.name) for d in declared}
    scope = TOP_SCOPE
    out: list[LandingAnomaly] = []
    if not lake.landing_root.is_dir():
        return out
    with _landing_dir(lake) as root:
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.is_symlink():
                out.append(_symlink_anomaly(e.name, scope, _readlink(e.name, root), dept=e.name))
            elif e.name.startswith("."):
                continue
            elif e.is_file(follow_symlinks=False):
                out.append(_anomaly("landing.misplaced_file", e.name, scope,
                                    "a file directly in the landing zone (deliveries go to "
                                    "landing/<dept>/<dataset>/<YYYY-MM-DD>/): not ingested"))
            elif not e.is_dir(follow_symlinks=False):
                continue
            elif e.name not in depts:
                out.append(_anomaly("landing.undeclared_department", e.name, scope,
                                    f"folder of no declared department (declared: {sorted(depts)}): "
                                    "nothing in it is ingested", dept=e.name))
            else:
                try:
                    with _landing_dir(lake, e.name) as dfd:
                        with os.scandir(dfd) as it:
                            sub = sorted(it, key=lambda x: x.name)
                        for s in sub:
                            rel = f"{e.name}/{s.name}"
                            if (e.name, s.name) in names or s.name.startswith(".") and not s.is_symlink():
                                continue
                            if s.is_symlink():
                                out.append(_symlink_anomaly(rel, scope, _readlink(s.name, dfd), dept=e.name,
                                                            dataset=s.name))
                            elif s.is_file(follow_symlinks=False):
                                out.append(_anomaly("landing.misplaced_file", rel, scope,
                                                    "a file directly in a department folder (deliveries go to "
                                                    "<dataset>/<YYYY-MM-DD>/): not ingested", dept=e.name))
                            elif s.is_dir(follow_symlinks=False):
                                declared_here = sorted(n for d, n in names if d == e.name)
                                out.append(_anomaly("landing.undeclared_dataset", rel, scope,
                                                    f"folder of no declared dataset of {e.name} (declared: "
                                                    f"{declared_here}): nothing in it is ingested",
                                                    dept=e.name, dataset=s.name))
                except LandingSymlink as exc:  # swapped for a link since the listing
                    out.append(_symlink_anomaly(exc.rel, scope, exc.target, dept=e.name))
                except FileNotFoundError:
                    continue
    return out


@dataclass
class LandingScan:
    files: list[tuple[str, str]] = field(default_factory=list)  # (delivery date, file name) to ingest
    anomalies: list[LandingAnomaly] = field(default_factory=list)  # the dataset's scope


def scan_dataset(lake: Lake, ds: Dataset, up_to: str | None = None,
                 now: dt.datetime | str | None = None) -> LandingScan:
    """The delivered files of ``ds`` up to ``up_to`` (date folders in order, files by name) and
    the anomalies of its folder (scope ``<dept>/<dataset>``), following no link."""
    scope = f"{ds.dept}/{ds.name}"
    limit = future_limit(up_to, now)
    scan = LandingScan()
    kw = {"dept": ds.dept, "dataset": ds.name}
    try:
        with _landing_dir(lake, ds.dept, ds.name) as base:
            with os.scandir(base) as it:
                entries = sorted(it, key=lambda e: e.name)
            for e in entries:
                rel = f"{scope}/{e.name}"
                if e.is_symlink():
                    scan.anomalies.append(_symlink_anomaly(rel, scope, _readlink(e.name, base), **kw))
                    continue
                if e.name.startswith("."):
                    continue
                if e.is_file(follow_symlinks=False):
                    scan.anomalies.append(_anomaly("landing.misplaced_file", rel, scope,
                                                   "a file outside any delivery folder (deliveries go to "
                                                   "<YYYY-MM-DD>/): not ingested", **kw))
                    continue
                if not e.is_dir(follow_symlinks=False):
                    continue
                if not _DATE_RE.match(e.name) or not _is_date(e.name):
                    scan.anomalies.append(_anomaly("landing.not_a_date", rel, scope,
                                                   "delivery folder name is not a YYYY-MM-DD date: "
                                                   "nothing in it is ingested", **kw))
                    continue
                if e.name > limit:
                    scan.anomalies.append(_anomaly("landing.future_date", rel, scope,
                                                   f"delivery folder dated in the future (after {limit}"
                                                   f"{f', the run delivery date {up_to}' if up_to and up_to == limit else ''}"
                                                   "): nothing in it is ingested", delivery_date=e.name, **kw))
                    continue
                if up_to and e.name > up_to:
                    continue  # a later delivery: the run of its date ingests it
                try:
                    with _landing_dir(lake, ds.dept, ds.name, e.name) as dfd:
                        with os.scandir(dfd) as it:
                            files = sorted(it, key=lambda x: x.name)
                        for f in files:
                            if f.is_symlink():
                                scan.anomalies.append(_symlink_anomaly(f"{rel}/{f.name}", scope,
                                                                       _readlink(f.name, dfd),
                                                                       delivery_date=e.name, **kw))
                            elif (not f.name.startswith(".") and f.is_file(follow_symlinks=False)
                                  and fnmatch.fnmatchcase(f.name, ds.file_pattern)):
                                scan.files.append((e.name, f.name))
                except LandingSymlink as exc:  # swapped for a link since the listing
                    scan.anomalies.append(_symlink_anomaly(exc.rel, scope, exc.target, delivery_date=e.name, **kw))
                except FileNotFoundError:
                    continue
    except LandingSymlink as exc:
        if exc.rel == scope:  # the dataset folder itself (a linked department folder is scan_top's)
            scan.anomalies.append(_symlink_anomaly(exc.rel, scope, exc.target, **kw))
    except (FileNotFoundError, NotADirectoryError):
        pass  # nothing delivered yet (or a file where the folder should be: scan_top does not see it)
    return scan


def _is_date(name: str) -> bool:
    try:
        dt.date.fromisoformat(name)
        return True
    except ValueError:
        return False


def landing_files(lake: Lake, ds: Dataset, up_to: str | None = None) -> list[tuple[str, Path]]:
    """(delivery date, path) of every file ``scan_dataset`` would ingest (links never included)."""
    return [(d, lake.landing(ds.dept, ds.name, d) / n) for d, n in scan_dataset(lake, ds, up_to).files]


def _quarantine_anomaly(lake: Lake, a: LandingAnomaly) -> None:
    """A symlink inside a declared dataset: its reason.json in the file quarantine (the link's
    target text only: nothing is read through it). Written once per path."""
    if a.kind != "landing.symlink" or not (a.dept and a.dataset):
        return
    qdir = lake.quarantine_files(a.dept, a.dataset) / f"landing-{hashlib.sha256(a.path.encode()).hexdigest()[:16]}"
    a.quarantine_dir = str(qdir.relative_to(lake.root))
    reason = qdir / "reason.json"
    if reason.exists():
        return
    atomic_write_text(reason, json.dumps({
        "dept": a.dept, "dataset": a.dataset, "batch_id": None, "source_file": a.path, "sha256": None,
        "reason": a.kind, "rule": a.kind, "message": a.message, "link_target": a.link_target,
        "delivery_date": a.delivery_date, "content_copied": False,
        "quarantined_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }, ensure_ascii=False, indent=2) + "\n")


def record_anomalies(lake: Lake, scope: str, found: list[LandingAnomaly], *, complete: bool = True) -> None:
    for a in found:
        _quarantine_anomaly(lake, a)
    for a in landing_record_scan(lake, scope, found, complete=complete):
        log.warning("landing anomaly: %s", a.message)


def landing_sha256(ledger: Ledger, source_file: str, path: Path, st: os.stat_result | None = None) -> str:
    """The file's SHA-256: from the ledger's cache when the file is provably unchanged since it
    was last read (Ledger.cached_sha), else read and hashed now. Every run lists the whole
    landing history, so without the cache each extraction re-read every file ever delivered
    (3.4 s a day at 10 M people after one day; growing with every day kept). ``st``: the
    opened file's fstat (``path`` then reads that very file)."""
    st = st or path.stat()
    sha = ledger.cached_sha(source_file, st)
    if sha is None:
        started = time.time_ns()
        sha = sha256_file(path)
        ledger.remember_sha(source_file, st, sha, started)
    return sha


def ingest_file(lake: Lake, ledger: Ledger, ds: Dataset, delivery_date: str, path: Path) -> FileResult:
    """Ingest one landing file. It is opened without following a link (``_open_landing_file``):
    a symlink raises LandingSymlink, a vanished file FileNotFoundError; nothing is read then."""
    with _open_landing_file(lake, ds, delivery_date, path.name) as (src, st):
        return _ingest_opened(lake, ledger, ds, delivery_date, path, src, st)


def _ingest_opened(lake: Lake, ledger: Ledger, ds: Dataset, delivery_date: str, path: Path, src: Path,
                   st: os.stat_result) -> FileResult:
    """``path``: the landing path (names, lineage); ``src``: where its bytes are read from."""
    source_file = str(path.relative_to(lake.landing_root))

    def named(msg: str) -> str:
        return msg.replace(str(src), source_file).replace(str(path), source_file)

    sha = landing_sha256(ledger, source_file, src, st)
    # Two extractions of the same bytes at once (a scheduled and a manual run on two workers)
    # would share the batch's temporary folder and UTF-8 copy: the second waits for the first,
    # then finds the batch in the ledger and skips it.
    with exclusive_lock(lake.ingest_lock(ds.id, sha), timeout=INGEST_LOCK_TIMEOUT_S):
        return _ingest_new(lake, ledger, ds, delivery_date, path, src, st, source_file, sha, named)


INGEST_LOCK_TIMEOUT_S = 3600.0  # an extraction of a 10 M-row file takes well under a minute


def _ingest_new(lake: Lake, ledger: Ledger, ds: Dataset, delivery_date: str, path: Path, src: Path,
                st: os.stat_result, source_file: str, sha: str, named) -> FileResult:
    """The ingestion of a file whose SHA-256 is known, under its ingest lock."""
    seen = ledger.find_sha(ds.dept, ds.name, sha)
    if seen:
        if ledger.find_sha(ds.dept, ds.name, sha, delivery_date) is None:
            # the same bytes delivered for a new date (an unchanged snapshot): no new rows, but
            # the ledger records the delivery so freshness knows the department delivered
            ledger.record(Delivery(
                batch_id=seen.batch_id, dept=ds.dept, dataset=ds.name, delivery_date=delivery_date,
                file_name=path.name, source_file=source_file, sha256=sha, size_bytes=st.st_size,
                rows=0, status="duplicate", encoding=seen.encoding, reason=None,
                message=f"identical to {seen.source_file} ({seen.status} as batch {seen.batch_id})",
                supersedes=None, superseded_by=None,
                ingested_at=dt.datetime.now(dt.timezone.utc).isoformat()))
        return FileResult(source_file, sha, "skipped", batch_id=seen.batch_id,
                          message=f"identical to {seen.source_file}, already {seen.status} as batch {seen.batch_id}")
    batch_id = batch_id_for(delivery_date, sha)
    prev = ledger.previous_version(ds.dept, ds.name, delivery_date, path.name)
    res = FileResult(source_file, sha, "ingested", batch_id=batch_id, supersedes=prev.batch_id if prev else None)
    now = dt.datetime.now(dt.timezone.utc)
    final_dir = lake.raw_batch(ds.dept, ds.name, batch_id)
    tmp_dir = final_dir.with_name(f".{batch_id}.tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    # a non-UTF-8 delivery is decoded once, while its encoding is checked, into this UTF-8 copy
    utf8 = lake.extract_tmp(ds.id, batch_id)
    utf8.parent.mkdir(parents=True, exist_ok=True)
    detail: dict = {}

    def extract(pool: Executor | None) -> None:
        if ds.format == "xlsx":  # a zip of XML: no text encoding to detect (govlake.xlsx)
            res.rows = _write_batches(xlsx.iter_xlsx(src, ds, source_file), tmp_dir, ds.column_names,
                                      batch_id=batch_id, source_file=source_file, sha=sha, ingested_at=now,
                                      delivery_date=delivery_date)
            return
        res.encoding = enc.detect_file(src, transcode_to=utf8, pool=pool, inflight=2 * _workers())
        if pool is not None and ds.format != "jsonl":
            pool.shutdown()  # the CSV is parsed by pyarrow in this process: free the workers now
        data = utf8 if res.encoding != "utf-8-sig" else None
        if ds.format == "csv":
            header = _csv_header(src, res.encoding, data)
            check_contract(ds, header, source_file)
            batches = iter_csv(src, res.encoding, header, data)
        elif ds.format == "jsonl":
            jsonl_missing_columns(ds, src, res.encoding, source_file, data)
            batches = iter_jsonl(src, res.encoding, ds.column_names, source_file, data, pool=pool,
                                 parts=f"{utf8}.jsonl-part")
        else:
            raise ParseError("format.unsupported", f"{source_file}: rule format.unsupported: format {ds.format!r}")
        res.rows = _write_batches(batches, tmp_dir, ds.column_names, batch_id=batch_id, source_file=source_file,
                                  sha=sha, ingested_at=now, delivery_date=delivery_date)

    try:
        try:
            with _worker_pool(src) as pool:
                extract(pool)
        except BrokenProcessPool as e:  # a worker died (or could not start): redo it in this process
            log.warning("%s: worker processes failed (%s); extracting it sequentially", source_file, e)
            shutil.rmtree(tmp_dir, ignore_errors=True)
            utf8.unlink(missing_ok=True)
            extract(None)
        if res.rows == 0 and ds.delivery != "incremental":
            # an incremental feed may have no events that day; an empty snapshot is a fault
            raise ParseError("file.empty", f"{source_file}: rule file.empty: the snapshot delivery has no data rows",
                             row=1)
    except enc.UndecodableError as e:
        res.status, res.reason = "quarantined", "encoding.undecodable"
        res.message = named(str(e))
        detail = {"row": e.line, "byte_offset": e.byte_offset, "rule": res.reason}
    except (ContractError, ParseError) as e:
        res.status, res.reason, res.message = "quarantined", e.rule, named(str(e))
        detail = {"row": e.row, "rule": e.rule, "columns": getattr(e, "columns", [])}
    finally:
        utf8.unlink(missing_ok=True)
        for part in utf8.parent.glob(f"{utf8.name}.*part*"):  # a worker's output an error left behind
            part.unlink(missing_ok=True)
    if res.status == "quarantined":
        shutil.rmtree(tmp_dir, ignore_errors=True)
        res.rows = 0
        res.supersedes = None
        _quarantine_file(lake, ds, path, res, batch_id, detail, src=src)
        log.warning("quarantined %s: %s", source_file, res.message)
    else:
        shutil.rmtree(final_dir, ignore_errors=True)  # a crashed earlier attempt left it unrecorded
        os.replace(tmp_dir, final_dir)
    ledger.record(Delivery(
        batch_id=batch_id, dept=ds.dept, dataset=ds.name, delivery_date=delivery_date, file_name=path.name,
        source_file=source_file, sha256=sha, size_bytes=st.st_size,
        rows=res.rows if res.status == "ingested" else None, status=res.status, encoding=res.encoding,
        reason=res.reason, message=res.message, supersedes=res.supersedes, superseded_by=None,
        ingested_at=now.isoformat(),
    ))
    return res


def _owned_top_anomalies(ds: Dataset, declared: list[Dataset], top: list[LandingAnomaly]) -> list[LandingAnomaly]:
    """The top-scope anomalies this dataset's summary lists, so that a run prints each once:
    a department folder's to the department's first declared dataset, the root's to the first
    declared dataset of all."""
    first = min(declared, key=lambda d: d.id)
    first_of = {}
    for d in sorted(declared, key=lambda d: d.id):
        first_of.setdefault(d.dept, d)
    out = []
    for a in top:
        owner = first_of.get(a.dept) if "/" in a.path else first
        if owner is not None and owner.id == ds.id:
            out.append(a)
    return out


def extract_dataset(ds: Dataset, lake: Lake | None = None, up_to: str | None = None) -> DatasetResult:
    """Ingest every new delivery of one dataset. Never raises for a bad file: it is quarantined;
    a landing anomaly (symlink, undeclared folder, non-date or future folder) is recorded and
    listed in the summary, and nothing is read from it."""
    lake = (lake or Lake.default()).ensure()
    ledger = Ledger(lake)
    result = DatasetResult(ds.id)
    declared = list(metadata.datasets())
    if all(d.id != ds.id for d in declared):
        declared.append(ds)
    top = scan_top(lake, declared)
    record_anomalies(lake, TOP_SCOPE, top)
    scan = scan_dataset(lake, ds, up_to)
    record_anomalies(lake, f"{ds.dept}/{ds.name}", scan.anomalies)
    result.anomalies = _owned_top_anomalies(ds, declared, top) + scan.anomalies
    for delivery_date, name in scan.files:
        path = lake.landing(ds.dept, ds.name, delivery_date) / name
        try:
            r = ingest_file(lake, ledger, ds, delivery_date, path)
        except LandingSymlink as exc:  # swapped for a link after the listing: refused at the open
            a = _symlink_anomaly(exc.rel, f"{ds.dept}/{ds.name}", exc.target, dept=ds.dept, dataset=ds.name,
                                 delivery_date=delivery_date)
            record_anomalies(lake, a.scope, [a], complete=False)
            result.anomalies.append(a)
            continue
        except FileNotFoundError as exc:
            log.warning("%s: gone since the landing zone was listed, not ingested (%s)", path, exc)
            continue
        log.info("%s %s: %s rows=%s %s", ds.id, r.source_file, r.status, r.rows, r.message or "")
        result.files.append(r)
    ledger.export()
    return result
