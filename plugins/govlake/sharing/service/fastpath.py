"""A key index per published version, so a lookup or a verification does not scan Parquet.

Today the service answers ``POST /v1/resources/{r}/lookup`` and ``POST /v1/verify`` with
``SELECT cols FROM read_parquet(?) WHERE key = ?`` on a fresh DuckDB scan per request: the
footer is parsed, every row group's statistics are checked and, because the product file is
not sorted by the key and its row groups are large (~110 k rows), most row groups are decoded
(~25 ms a lookup at 1 M people, growing with the row count). Decoding one such row group with
pyarrow costs ~40 ms by itself, so a hash index over the product file (key -> row position) does
not help much: the row group is the smallest unit Parquet decodes.

So the fast path keeps, per (version file, key column), a **lookup copy**: the same rows
sorted by the key, written by DuckDB in row groups of ``ROW_GROUP_ROWS`` (2048) rows, in the
service's private state (``<lake meta>/service/lookup/<product>/v<N>/``; a sidecar JSON records
the source file's size and mtime, and a stale or partial copy is rebuilt). In memory the index
holds only the first key of each row group (about 5,000 strings at 10 M rows: well under 1 MB,
``Index.nbytes``) and the open ``ParquetFile`` (footer parsed once). A lookup bisects the first
keys, reads the one (or, for a key repeated across a boundary, few) 2048-row row group(s) with
the requested columns (``read_row_group``), and keeps the rows whose key equals the value.
Decoded row groups are kept in a small LRU (``GOVLAKE_FASTPATH_CACHE_MB``, default 64 MB for all
indexes together). A verification batch reads each row group it needs once (``rows_for``).

The copy is built on first use, under a lock (one build per file even when requests race);
DuckDB sorts with ``memory_limit`` 512 MB and spills to the copy's folder, so the build is
bounded in memory (about 4 s at 1 M rows; it could equally be done at publication). A copy
survives a restart. ``Index.for_version`` drops the indexes (and deletes the copies) of the same
product's older versions when ``current`` moves on, so one version per product is held.

Keys compare as DuckDB sorts VARCHAR: by UTF-8 bytes, which is Python's code-point order. NULL
keys sort last and are never found (``key = ?`` never matches NULL).

Nothing here decides access: the caller (the service) authorises the request, chooses the file
(the base file or a masked rendition) and the columns, exactly as for the DuckDB query; the
answer is the same rows, as the same Python values (``str``, ``datetime.date``, ``int``...).

Wiring (app.py; benchmarks/service_bench.py ``--fastpath`` does the same by wrapping the cursor):

* lookup, after ``path`` is chosen — instead of the ``svc.cursor().execute(... WHERE key = ?)``
  and the ``records = [dict(zip(names, row)) ...]`` lines::

      idx = fastpath.Index.ready(svc.lake, resource, version, keycol, path)
      if idx is not None:
          records = idx.lookup(value, [c.column for c in plan])
      else:  # first requests of a new version, while the copy is built: the DuckDB query as today

* verification, after ``wanted_fields`` and ``base_file`` — instead of the ``con.execute(... IN
  (SELECT unnest(?::VARCHAR[])))`` and the ``for row in tbl: found.setdefault(...)`` loop::

      idx = fastpath.Index.ready(svc.lake, resource, version, keycol, base_file)
      found = idx.rows_for(keys, wanted_fields) if idx is not None else <the DuckDB query, as today>

``found`` has the same shape (key -> list of tuples of ``wanted_fields``). Figures:
benchmarks/results/fastpath-micro-*.json and service-*-fast.json.
"""
from __future__ import annotations

import bisect
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

class FastPathError(ValueError):
    """The index cannot be built for this file or column; the message names both."""


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

    def drop(self, path) -> None:
        with self._lock:
            for k in [k for k in self._d if k[0] == str(path)]:
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
ROW_GROUP_ROWS = 2048
BUILD_MEMORY = "512MB"


class Index:
    """Key -> rows of one Parquet file (a published version or one of its renditions), through
    its key-sorted lookup copy."""

    _registry: dict[tuple[str, str], "Index"] = {}
    _current: dict[tuple[str, str], int] = {}  # (lake root, product) -> newest version held
    _owner: dict[tuple[str, str], tuple[str, str, int]] = {}  # index key -> (lake root, product, version)
    _building: dict[tuple[str, str], threading.Lock] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path | str, key_column: str, *, copy_dir: Path | str | None = None,
                 product: str = "", version: int | None = None):
        self.path = str(path)
        self.key_column = key_column
        self.product, self.version = product, version
        from govlake.sharing import crypto

        self.encrypted = crypto.is_encrypted(self.path)
        src = pq.ParquetFile(self.path, **crypto.arrow_read_options(self.path))
        names = src.schema_arrow.names
        if key_column not in names:
            raise FastPathError(f"{self.path}: no column {key_column!r} (columns: {', '.join(names)})")
        ktype = src.schema_arrow.field(key_column).type
        if not (pa.types.is_string(ktype) or pa.types.is_large_string(ktype) or pa.types.is_string_view(ktype)):
            raise FastPathError(f"{self.path}: key column {key_column!r} of type {ktype} is not text")
        self.source_rows = src.metadata.num_rows
        src.close()
        self.columns = names
        folder = Path(copy_dir) if copy_dir else Path(self.path).parent / "_lookup"
        self.copy_path = folder / f"{Path(self.path).stem}.by_{key_column}.parquet"
        t0 = time.perf_counter()
        self.built = self._ensure_copy()
        self.build_s = time.perf_counter() - t0
        self.pf = pq.ParquetFile(str(self.copy_path), **crypto.arrow_read_options(self.copy_path))
        md = self.pf.metadata
        counts = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        self.rg_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if int(self.rg_starts[-1]) != self.source_rows:
            raise FastPathError(f"{self.copy_path}: {int(self.rg_starts[-1])} rows, the source "
                                f"{self.path} has {self.source_rows}")
        firsts: list[str] = []
        for i in range(md.num_row_groups):  # the first key of each row group; NULLs sort last
            k = self.pf.read_row_group(i, columns=[key_column]).column(0)[0].as_py()
            if k is None:
                break
            firsts.append(k)
        self.first_keys = firsts
        self.num_rows = self.source_rows
        self._read_opts = crypto.arrow_read_options(self.copy_path)
        self._local = threading.local()

    def _file(self) -> pq.ParquetFile:
        """This thread's reader of the copy: a ``ParquetFile`` is not safe to read from several
        threads at once (concurrent ``read_row_group`` calls crashed pyarrow 26 under load), so
        each thread has its own, sharing the parsed footer."""
        f = getattr(self._local, "pf", None)
        if f is None:
            f = pq.ParquetFile(str(self.copy_path), metadata=self.pf.metadata, **self._read_opts)
            self._local.pf = f
        return f

    # -- the lookup copy
    def _stamp(self) -> dict:
        st = os.stat(self.path)
        return {"source": self.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "rows": self.source_rows,
                "key": self.key_column, "row_group_rows": ROW_GROUP_ROWS, "encrypted": self.encrypted}

    def _ensure_copy(self) -> bool:
        """Write the key-sorted copy unless an up-to-date one exists; True when written."""
        import duckdb

        side = self.copy_path.with_suffix(".json")
        want = self._stamp()
        if self.copy_path.is_file() and side.is_file():
            try:
                if json.loads(side.read_text(encoding="utf-8")) == want:
                    return False
            except (OSError, ValueError):
                pass
        self.copy_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.copy_path.with_name(f".{self.copy_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        # an encrypted source is decrypted in memory only (read through pyarrow, ADR 0014): the
        # sort must not spill its clear rows to disk, so no temp directory for it
        spill = "" if self.encrypted else str(self.copy_path.parent / ".spill")
        con = duckdb.connect(":memory:", config={"threads": 2, "memory_limit": BUILD_MEMORY,
                                                 "temp_directory": spill, "preserve_insertion_order": True})
        try:
            from govlake.sharing import crypto

            k = '"' + self.key_column.replace('"', '""') + '"'
            src = crypto.read_parquet_sql(self.path, con, options="file_row_number = true")
            # rows of one key stay in file order: the order the DuckDB query returns them in
            sql = (f"SELECT * EXCLUDE (file_row_number) FROM {src} "
                   f"ORDER BY {k} NULLS LAST, file_row_number")
            if self.encrypted:  # the copy holds the same values: encrypted like its source (ADR 0014)
                reader = con.sql(sql).to_arrow_reader(ROW_GROUP_ROWS)
                crypto.write_batches(reader, reader.schema, tmp, encrypt=True, row_group_size=ROW_GROUP_ROWS)
            else:
                con.execute(f"COPY ({sql}) TO '{tmp}' (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
                            f"COMPRESSION zstd)")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            con.close()
        os.replace(tmp, self.copy_path)
        side.write_text(json.dumps(want, ensure_ascii=False), encoding="utf-8")
        return True

    # -- the registry
    @classmethod
    def for_version(cls, lake, product: str, version: int, key_column: str, path: Path | str) -> "Index":
        """The index of ``path`` (a file of ``product`` version ``version``) on ``key_column``,
        built on first use (its copy under ``<lake meta>/service/lookup``); the indexes of the
        product's older versions are dropped when a newer one is asked for."""
        key = (str(path), key_column)
        root = str(getattr(lake, "root", lake))
        meta = getattr(lake, "meta_root", None)
        with cls._lock:
            idx = cls._registry.get(key)
            if idx is not None:
                return idx
            held = cls._current.get((root, product))
            if held is None or version > held:  # current moved on: drop the older versions
                if held is not None:
                    cls._drop(root, product, keep=version, meta=meta)
                cls._current[(root, product)] = version
            build_lock = cls._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per file even when requests race
            with cls._lock:
                idx = cls._registry.get(key)
            if idx is None:
                copy_dir = (Path(meta) / "service" / "lookup" / product / f"v{version}") if meta else None
                idx = cls(path, key_column, copy_dir=copy_dir, product=product, version=version)
                with cls._lock:
                    cls._registry[key] = idx
                    cls._owner[key] = (root, product, version)
                    cls._building.pop(key, None)
        return idx

    _failed: dict[tuple[str, str], str] = {}

    @classmethod
    def ready(cls, lake, product: str, version: int, key_column: str, path: Path | str) -> "Index | None":
        """The index if it is built; else start building it in a background thread and return
        None at once, so the caller answers this request the old way (DuckDB) instead of waiting
        for the copy (seconds at 1 M rows, about a minute at 10 M). A build that failed is not
        retried by this process (``failures()`` says why); the caller keeps the old way."""
        key = (str(path), key_column)
        with cls._lock:
            idx = cls._registry.get(key)
            if idx is not None or key in cls._failed:
                return idx
            if key in cls._building:  # a build is running (or queued)
                return None
            cls._building[key] = threading.Lock()

        def build():
            try:
                cls.for_version(lake, product, version, key_column, path)
            except Exception as exc:  # noqa: BLE001 — reported by failures(); the caller falls back
                with cls._lock:
                    cls._failed[key] = f"{type(exc).__name__}: {exc}"
                    cls._building.pop(key, None)

        threading.Thread(target=build, name=f"fastpath-build-{product}-v{version}", daemon=True).start()
        return None

    @classmethod
    def failures(cls) -> dict[tuple[str, str], str]:
        with cls._lock:
            return dict(cls._failed)

    @classmethod
    def _drop(cls, root: str, product: str, keep: int, meta=None) -> None:
        import shutil

        for k, (r, p, v) in list(cls._owner.items()):
            if r == root and p == product and v != keep:
                idx = cls._registry.pop(k, None)
                cls._owner.pop(k, None)
                if idx is not None:  # readers still using it keep their handles until they finish
                    CACHE.drop(idx.copy_path)
        if meta is not None:  # the copies of older versions, also those of a previous process
            base = Path(meta) / "service" / "lookup" / product
            for d in (base.iterdir() if base.is_dir() else []):
                if d.is_dir() and d.name[1:].isdigit() and int(d.name[1:]) < keep:
                    shutil.rmtree(d, ignore_errors=True)

    @classmethod
    def held(cls) -> list["Index"]:
        with cls._lock:
            return list(cls._registry.values())

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            for idx in cls._registry.values():
                CACHE.drop(idx.copy_path)
            cls._registry.clear()
            cls._owner.clear()
            cls._current.clear()
            cls._failed.clear()
            cls._building.clear()

    # -- reading
    @property
    def nbytes(self) -> int:
        """Memory held by the index itself (first keys; the row-group LRU is ``CACHE.nbytes``)."""
        return int(sum(sys.getsizeof(k) for k in self.first_keys) + sys.getsizeof(self.first_keys)
                   + self.rg_starts.nbytes)

    def groups_of(self, value: str) -> range:
        """The row groups that can hold ``value``."""
        lo = bisect.bisect_left(self.first_keys, value) - 1
        hi = bisect.bisect_right(self.first_keys, value) - 1
        return range(max(lo, 0), hi + 1) if hi >= 0 else range(0)

    def _row_group(self, rg: int, columns: tuple[str, ...]) -> pa.Table:
        ck = (str(self.copy_path), rg, columns)
        t = CACHE.get(ck)
        if t is None:
            t = self._file().read_row_group(rg, columns=list(columns))
            CACHE.put(ck, t)
        return t

    def _read(self, values: set[str], columns: list[str]) -> list[tuple[str, tuple]]:
        """(key, row tuple of ``columns``) of every row whose key is in ``values``."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise FastPathError(f"{self.path}: no column {', '.join(missing)}")
        by_group: dict[int, list[str]] = {}
        for v in values:
            if isinstance(v, str):
                for g in self.groups_of(v):
                    by_group.setdefault(g, []).append(v)
        need = tuple(dict.fromkeys([self.key_column, *columns]))
        out: list[tuple[str, tuple]] = []
        for g in sorted(by_group):
            t = self._row_group(g, need)
            keys = t.column(self.key_column)
            mask = pc.is_in(keys, value_set=pa.array(by_group[g], type=keys.type))
            hit = t.filter(mask)
            if hit.num_rows == 0:
                continue
            ks = hit.column(self.key_column).to_pylist()
            cols = [hit.column(c).to_pylist() for c in columns]
            out.extend((k, tuple(c[i] for c in cols)) for i, k in enumerate(ks))
        return out

    def lookup(self, value: str, columns: list[str] | None = None) -> list[dict]:
        """The rows whose key is ``value``, as dicts of ``columns`` (default: every column)."""
        columns = list(columns) if columns is not None else list(self.columns)
        return [dict(zip(columns, row)) for _, row in self._read({value}, columns)]

    def rows_for(self, keys: Iterable[str], columns: list[str]) -> dict[str, list[tuple]]:
        """key -> the tuples of ``columns`` of its rows, for the keys that exist (a batch of
        verifications reads each row group once)."""
        found: dict[str, list[tuple]] = {}
        for k, row in self._read({k for k in keys if k is not None}, columns):
            found.setdefault(k, []).append(row)
        return found

    def __repr__(self) -> str:
        return (f"Index({self.product or self.path} v{self.version}, {self.key_column}, {self.num_rows} rows, "
                f"{self.pf.metadata.num_row_groups} row groups, {self.nbytes / 2**10:.0f} KiB)")


def equivalent_sql(columns: list[str], key_column: str) -> str:
    """The DuckDB query this replaces (for benchmarks and tests)."""
    from govlake import masking

    return (f"SELECT {', '.join(masking.sql_ident(c) for c in columns)} FROM read_parquet(?) "
            f"WHERE {masking.sql_ident(key_column)} = ?")


__all__ = ["Index", "FastPathError", "CACHE", "equivalent_sql", "ROW_GROUP_ROWS"]
