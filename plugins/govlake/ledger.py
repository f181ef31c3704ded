"""The delivery ledger: every landing file, identified by SHA-256, and what became of it.

SQLite (``<lake>/_meta/ledger.sqlite``) so that concurrent extract tasks serialize safely;
exported to ``<lake>/raw/_ledger.parquet`` after each change so dbt can read it.

Rules: a file whose SHA-256 is already in the ledger for its dataset adds no rows. Seen again
for the same delivery date (a re-run, a re-sent file) it is simply skipped; delivered again for
a *new* date (an unchanged snapshot) it is recorded once with status ``duplicate`` pointing at
the original batch, so freshness sees that the department delivered on time. A different file
with the same name for an already-delivered date is a correction: it is ingested as a new
batch and the ledger records that it supersedes the old batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from govlake import sqlite_store
from govlake.storage import Lake

SCHEMA = """
create table if not exists deliveries (
    batch_id      text not null,
    dept          text not null,
    dataset       text not null,
    delivery_date text not null,
    file_name     text not null,
    source_file   text not null,
    sha256        text not null,
    size_bytes    integer not null,
    rows          integer,
    status        text not null check (status in ('ingested', 'quarantined', 'duplicate')),
    encoding      text,
    reason        text,
    message       text,
    supersedes    text,
    superseded_by text,
    ingested_at   text not null,
    primary key (dept, dataset, sha256, delivery_date)
);
create index if not exists deliveries_name on deliveries (dept, dataset, delivery_date, file_name);
-- the SHA-256 of each landing file as last read, with the file's stat at the time: lets a later
-- extraction recognise an unchanged, already-seen file without reading it again (see cached_sha)
create table if not exists landing_hashes (
    source_file  text primary key,
    size_bytes   integer not null,
    mtime_ns     integer not null,
    inode        integer not null,
    sha256       text not null,
    hashed_at_ns integer not null
);
"""

# a cached hash is trusted only for a file last modified this long before it was hashed: a file
# rewritten (same size) within the file system's timestamp granularity of the hashing could keep
# its mtime, so it is read again ("racy" entries, as git's index treats them)
RACY_NS = 2_000_000_000

COLUMNS = ["batch_id", "dept", "dataset", "delivery_date", "file_name", "source_file", "sha256",
           "size_bytes", "rows", "status", "encoding", "reason", "message", "supersedes",
           "superseded_by", "ingested_at"]

ARROW_SCHEMA = pa.schema([
    (c, pa.int64() if c in ("size_bytes", "rows") else pa.string()) for c in COLUMNS
])


@dataclass
class Delivery:
    batch_id: str
    dept: str
    dataset: str
    delivery_date: str
    file_name: str
    source_file: str
    sha256: str
    size_bytes: int
    rows: int | None
    status: str
    encoding: str | None
    reason: str | None
    message: str | None
    supersedes: str | None
    superseded_by: str | None
    ingested_at: str


class Ledger:
    def __init__(self, lake: Lake):
        self.lake = lake
        lake.meta_root.mkdir(parents=True, exist_ok=True)
        self.path = lake.ledger_db
        with self._conn() as c:
            c.executescript(SCHEMA)

    def _conn(self):
        return sqlite_store.connect(self.path, timeout=120)

    def find_sha(self, dept: str, dataset: str, sha256: str, delivery_date: str | None = None) -> Delivery | None:
        """The first time these bytes were seen (on ``delivery_date``, when given)."""
        q = "select * from deliveries where dept=? and dataset=? and sha256=?"
        args: list = [dept, dataset, sha256]
        if delivery_date is not None:
            q += " and delivery_date=?"
            args.append(delivery_date)
        with self._conn() as c:
            row = c.execute(q + " order by status = 'duplicate', ingested_at limit 1", args).fetchone()
        return Delivery(**dict(row)) if row else None

    def cached_sha(self, source_file: str, st: os.stat_result) -> str | None:
        """The SHA-256 of ``source_file`` as last read, if the file is provably unchanged since:
        same size, modification time (ns) and inode, and modified at least RACY_NS before it
        was hashed. Otherwise None: the caller reads and hashes the file."""
        with self._conn() as c:
            row = c.execute("select * from landing_hashes where source_file=?", (source_file,)).fetchone()
        if (row is None or row["size_bytes"] != st.st_size or row["mtime_ns"] != st.st_mtime_ns
                or row["inode"] != st.st_ino or row["hashed_at_ns"] - row["mtime_ns"] < RACY_NS):
            return None
        return row["sha256"]

    def remember_sha(self, source_file: str, st: os.stat_result, sha256: str, hashed_at_ns: int) -> None:
        """Record the hash of ``source_file`` read from the file whose stat (taken before
        reading) is ``st``; ``hashed_at_ns`` is the wall-clock time reading started."""
        with self._conn() as c:
            c.execute("insert or replace into landing_hashes values (?, ?, ?, ?, ?, ?)",
                      (source_file, st.st_size, st.st_mtime_ns, st.st_ino, sha256, hashed_at_ns))

    def previous_version(self, dept: str, dataset: str, delivery_date: str, file_name: str) -> Delivery | None:
        """The live (not superseded) ingested batch of the same file name and delivery date."""
        with self._conn() as c:
            row = c.execute(
                "select * from deliveries where dept=? and dataset=? and delivery_date=? and file_name=? "
                "and status='ingested' and superseded_by is null order by ingested_at desc limit 1",
                (dept, dataset, delivery_date, file_name),
            ).fetchone()
        return Delivery(**dict(row)) if row else None

    def record(self, d: Delivery) -> None:
        with self._conn() as c:
            c.execute("begin immediate")
            try:
                c.execute(
                    f"insert into deliveries ({','.join(COLUMNS)}) values ({','.join('?' * len(COLUMNS))})",
                    [getattr(d, k) for k in COLUMNS],
                )
                if d.supersedes and d.status == "ingested":
                    c.execute(
                        "update deliveries set superseded_by=? where dept=? and dataset=? and batch_id=? "
                        "and status='ingested'",
                        (d.batch_id, d.dept, d.dataset, d.supersedes),
                    )
                c.execute("commit")
            except BaseException:
                c.execute("rollback")
                raise

    def all(self, dept: str | None = None, dataset: str | None = None) -> list[Delivery]:
        q, args = "select * from deliveries", []
        if dept:
            q += " where dept=?" + (" and dataset=?" if dataset else "")
            args = [dept] + ([dataset] if dataset else [])
        with self._conn() as c:
            rows = c.execute(q + " order by dept, dataset, delivery_date, ingested_at", args).fetchall()
        return [Delivery(**dict(r)) for r in rows]

    def export(self) -> Path:
        """Write the whole ledger to raw/_ledger.parquet atomically (for dbt)."""
        rows = self.all()
        table = pa.Table.from_pylist([{k: getattr(r, k) for k in COLUMNS} for r in rows], schema=ARROW_SCHEMA)
        out = self.lake.ledger_export
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{id(self)}.tmp")
        pq.write_table(table, tmp)
        tmp.replace(out)
        return out
