"""A key index per published version, so a lookup or a verification does not scan Parquet.

Today the service answers ``POST /v1/resources/{r}/lookup`` and ``POST /v1/verify`` with
``SELECT cols FROM read_parquet(?) WHERE key = ?`` on a fresh DuckDB scan per request: the
footer is parsed, every row group's statistics are checked and, because the key is not the
sort order of the file, most row groups are decoded. This module builds, once per
(version file, key column), an index that maps a key to its row positions:

- ``hashes``: a sorted ``uint64`` array of a 64-bit FNV-1a hash of each key's UTF-8 bytes
  (computed vectorised with numpy over the Arrow buffers, row group by row group);
- ``rows``: the ``uint32`` row position of each hash, in the same order;
- the row-group start offsets.

So the index costs 12 bytes a row (120 MB at 10 M rows; ``Index.nbytes``), whatever the key's
length (an 18-digit ID number or a 70-character join token). A lookup hashes the value,
``searchsorted``-s the hash, maps each position to its row group and reads only that row
group's requested columns (``pq.ParquetFile.read_row_group`` on a file kept open, footer parsed
once) plus the key column, then ``take``-s the rows and keeps only those whose key is really the
value (so a hash collision can never return another person's row). Decoded row groups are kept
in a small LRU (``cache_bytes``, default 64 MB for all indexes together) because a row group is
the smallest unit Parquet can decode.

Indexes are built lazily, on the first request for a version, under a lock (one build per
version even with concurrent requests), and held in a process-wide registry keyed by the file
and key column. ``Index.for_version`` drops the indexes of the same product's other versions
when ``current`` moves, so at most one version per product is held.

Nothing here decides access: the caller (the service) authorises the request, chooses the file
(the base file or a masked rendition) and the columns, exactly as for the DuckDB query. The
answer is the same rows (as Python values: ``str``, ``datetime.date``, ``int``...).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1


class FastPathError(ValueError):
    """The index cannot be built for this file or column; the message names both."""


# ---- hashing ---------------------------------------------------------------------------------
def hash_key(value: str | bytes) -> int:
    """The 64-bit FNV-1a hash of a key's UTF-8 bytes, then mixed with its length (the same
    arithmetic as ``hash_array``)."""
    b = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    h = FNV_OFFSET
    for ch in b:
        h = ((h ^ ch) * FNV_PRIME) & _MASK
    return ((h ^ len(b)) * FNV_PRIME) & _MASK


def hash_array(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(hashes of the non-null values, their positions in ``arr``) for a string/binary array."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type)
            or pa.types.is_large_binary(arr.type) or pa.types.is_string_view(arr.type)):
        raise FastPathError(f"key column of type {arr.type} is not text")
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    maxlen = int(lengths.max()) if n else 0
    if n and int(lengths.min()) == maxlen and maxlen > 0 and np.array_equal(starts, starts[0] + np.arange(n) * maxlen):
        mat = data[starts[0]: starts[0] + n * maxlen].reshape(n, maxlen)  # fixed width: no gather
        for j in range(maxlen):
            h ^= mat[:, j]
            h *= prime
    elif n and maxlen:
        last = max(len(data) - 1, 0)
        for j in range(maxlen):
            active = lengths > j
            nxt = (h ^ data[np.minimum(starts + j, last)]) * prime
            h = np.where(active, nxt, h)
    h ^= lengths.astype(np.uint64)
    h *= prime
    valid = np.ones(n, dtype=bool) if arr.null_count == 0 else np.asarray(arr.is_valid())
    pos = np.nonzero(valid)[0]
    return h[pos], pos


# ---- the decoded row-group cache -------------------------------------------------------------
class _RowGroupCache:
    """An LRU of decoded row groups ((file, row group, columns) -> pa.Table), bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._d: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            t = self._d.get(key)
            if t is not None:
                self._d.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
            return t

    def put(self, key, table: pa.Table) -> None:
        size = table.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._d:
                return
            self._d[key] = table
            self._bytes += size
            while self._bytes > self.max_bytes and self._d:
                _, old = self._d.popitem(last=False)
                self._bytes -= old.nbytes

    def drop(self, path: str) -> None:
        with self._lock:
            for k in [k for k in self._d if k[0] == path]:
                self._bytes -= self._d.pop(k).nbytes

    @property
    def nbytes(self) -> int:
        return self._bytes


def _cache_budget() -> int:
    try:
        return int(float(os.environ.get("GOVLAKE_FASTPATH_CACHE_MB", "64")) * 2**20)
    except ValueError:
        return 64 * 2**20


CACHE = _RowGroupCache(_cache_budget())


# ---- the index -------------------------------------------------------------------------------
class Index:
    """Key -> row positions of one Parquet file (a published version or one of its renditions)."""

    _registry: dict[tuple[str, str], "Index"] = {}
    _current: dict[tuple[str, str], int] = {}  # (lake root, product) -> version held
    _lock = threading.Lock()
    _building: dict[tuple[str, str], threading.Lock] = {}
    _owner: dict[tuple[str, str], tuple[str, str, int]] = {}  # index key -> (lake root, product, version)

    def __init__(self, path: Path | str, key_column: str, *, product: str = "", version: int | None = None):
        self.path = str(path)
        self.key_column = key_column
        self.product, self.version = product, version
        self.pf = pq.ParquetFile(self.path, memory_map=True)
        names = self.pf.schema_arrow.names
        if key_column not in names:
            raise FastPathError(f"{self.path}: no column {key_column!r} (columns: {', '.join(names)})")
        md = self.pf.metadata
        counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.rg_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.num_rows = int(self.rg_starts[-1])
        if self.num_rows >= 2**32:
            raise FastPathError(f"{self.path}: {self.num_rows} rows exceed the index's uint32 positions")
        hs, ps = [], []
        for i in range(md.num_row_groups):
            col = self.pf.read_row_group(i, columns=[key_column]).column(0)
            h, pos = hash_array(col)
            hs.append(h)
            ps.append((pos + self.rg_starts[i]).astype(np.uint32))
        hashes = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
        rows = np.concatenate(ps) if ps else np.zeros(0, np.uint32)
        del hs, ps
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        del hashes
        self.rows = rows[order]
        del rows, order
        self._lock = threading.Lock()

    # -- the registry
    @classmethod
    def for_version(cls, lake, product: str, version: int, key_column: str, path: Path | str) -> "Index":
        """The index of ``path`` (a file of ``product`` version ``version``) on ``key_column``,
        built on first use; the indexes of other versions of the product are dropped."""
        key = (str(path), key_column)
        root = str(getattr(lake, "root", lake))
        with cls._lock:
            idx = cls._registry.get(key)
            if idx is not None:
                return idx
            held = cls._current.get((root, product))
            if held is None or version > held:  # current moved on: drop the older versions
                if held is not None:
                    cls._drop(root, product, keep=version)
                cls._current[(root, product)] = version
            build_lock = cls._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per file even when requests race
            with cls._lock:
                idx = cls._registry.get(key)
            if idx is None:
                idx = cls(path, key_column, product=product, version=version)
                with cls._lock:
                    cls._registry[key] = idx
                    cls._building.pop(key, None)
                    cls._owner[key] = (root, product, version)
        return idx

    @classmethod
    def _drop(cls, root: str, product: str, keep: int) -> None:
        for k, (r, p, v) in list(cls._owner.items()):
            if r == root and p == product and v != keep:
                idx = cls._registry.pop(k, None)
                cls._owner.pop(k, None)
                if idx is not None:
                    CACHE.drop(idx.path)
                    idx.pf.close()

    @classmethod
    def held(cls) -> list["Index"]:
        with cls._lock:
            return list(cls._registry.values())

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            for idx in cls._registry.values():
                CACHE.drop(idx.path)
            cls._registry.clear()
            cls._owner.clear()
            cls._current.clear()

    # -- reading
    @property
    def nbytes(self) -> int:
        """Memory held by the index itself (the row-group cache is ``CACHE.nbytes``)."""
        return int(self.hashes.nbytes + self.rows.nbytes + self.rg_starts.nbytes)

    def positions(self, value: str) -> np.ndarray:
        """Candidate row positions of ``value`` (hash matches; confirmed when read)."""
        h = np.uint64(hash_key(value))
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        return self.rows[lo:hi]

    def _row_group(self, rg: int, columns: tuple[str, ...]) -> pa.Table:
        ck = (self.path, rg, columns)
        t = CACHE.get(ck)
        if t is None:
            t = self.pf.read_row_group(rg, columns=list(columns))
            CACHE.put(ck, t)
        return t

    def _read(self, positions: Iterable[int], columns: list[str]) -> list[tuple[str, tuple]]:
        """(key, row tuple of ``columns``) for each position, grouped by row group, in order."""
        pos = np.asarray(sorted(set(int(p) for p in positions)), dtype=np.int64)
        if len(pos) == 0:
            return []
        missing = [c for c in columns if c not in self.pf.schema_arrow.names]
        if missing:
            raise FastPathError(f"{self.path}: no column {', '.join(missing)}")
        need = tuple(dict.fromkeys([self.key_column, *columns]))
        rgs = np.searchsorted(self.rg_starts, pos, side="right") - 1
        out: list[tuple[str, tuple]] = []
        for rg in np.unique(rgs):
            local = pos[rgs == rg] - self.rg_starts[rg]
            t = self._row_group(int(rg), need).take(pa.array(local))
            keys = t.column(self.key_column).to_pylist()
            cols = [t.column(c).to_pylist() for c in columns]
            for i, k in enumerate(keys):
                out.append((k, tuple(c[i] for c in cols)))
        return out

    def lookup(self, value: str, columns: list[str] | None = None) -> list[dict]:
        """The rows whose key is ``value``, as dicts of ``columns`` (default: every column)."""
        columns = list(columns) if columns is not None else list(self.pf.schema_arrow.names)
        return [dict(zip(columns, row)) for k, row in self._read(self.positions(value), columns) if k == value]

    def rows_for(self, keys: Iterable[str], columns: list[str]) -> dict[str, list[tuple]]:
        """key -> the tuples of ``columns`` of its rows, for the keys that exist (a batch of
        verifications reads each row group once)."""
        wanted = {k for k in keys if k is not None}
        cand: list[int] = []
        for k in wanted:
            cand.extend(int(p) for p in self.positions(k))
        found: dict[str, list[tuple]] = {}
        for k, row in self._read(cand, columns):
            if k in wanted:
                found.setdefault(k, []).append(row)
        return found

    def __repr__(self) -> str:
        return (f"Index({self.product or self.path} v{self.version}, {self.key_column}, {self.num_rows} rows, "
                f"{self.pf.metadata.num_row_groups} row groups, {self.nbytes / 2**20:.1f} MB)")


def equivalent_sql(columns: list[str], key_column: str) -> str:
    """The DuckDB query this replaces (for benchmarks and tests)."""
    from govlake import masking

    return (f"SELECT {', '.join(masking.sql_ident(c) for c in columns)} FROM read_parquet(?) "
            f"WHERE {masking.sql_ident(key_column)} = ?")


__all__ = ["Index", "FastPathError", "hash_key", "hash_array", "CACHE", "equivalent_sql"]
