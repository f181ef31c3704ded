"""The delivery ledger: every landing file, identified by SHA-256, and what became of it.

Where it lives is one setting, ``GOVLAKE_STATE_DB``: unset (the embedded default) it is SQLite
(``<lake>/_meta/ledger.sqlite``, writers serialized by ``begin immediate``); a
``postgresql://user:password@host:port/db`` URL (the cluster, docker-compose) puts it in Postgres,
so that extract tasks on several Celery workers write one ledger (writers serialized by a
``share row exclusive`` lock on the table, which readers do not wait for). The SQL is the same
for both: ``?`` placeholders (``%s`` for psycopg), ``insert ... on conflict``. Either way the
ledger is exported to ``<lake>/raw/_ledger.parquet`` after each change so dbt can read it.

Rules: a file whose SHA-256 is already in the ledger for its dataset adds no rows. Seen again
for the same delivery date (a re-run, a re-sent file) it is simply skipped; delivered again for
a *new* date (an unchanged snapshot) it is recorded once with status ``duplicate`` pointing at
the original batch, so freshness sees that the department delivered on time. A different file
with the same name for an already-delivered date is a correction: it is ingested as a new
batch and the ledger records that it supersedes the old batch.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

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

STATE_DB_ENV = "GOVLAKE_STATE_DB"


class StateDBError(ValueError):
    """GOVLAKE_STATE_DB is not a usable setting (the message names it; never the password)."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def state_db_url(value: str | None = None) -> str | None:
    """The Postgres URL the ledger lives in, or None for the embedded SQLite file.

    ``value`` defaults to the ``GOVLAKE_STATE_DB`` environment variable; empty means unset."""
    v = (os.environ.get(STATE_DB_ENV, "") if value is None else value).strip()
    if not v:
        return None
    parts = urlsplit(v)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        raise StateDBError(f"{STATE_DB_ENV}={redact(v)!r}: expected unset (the SQLite file under the lake's "
                           "_meta/) or postgresql://user:password@host:port/database")
    return v


class _PgConn:
    """A Postgres connection (psycopg 3, else psycopg2) with sqlite3's ``execute`` shape:
    ``?`` placeholders, rows by column name, autocommit (``begin``/``commit`` by the caller)."""

    def __init__(self, url: str):
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            import psycopg2
            import psycopg2.extras

            self._c = psycopg2.connect(url, cursor_factory=psycopg2.extras.RealDictCursor)
            self._c.autocommit = True
        else:
            self._c = psycopg.connect(url, autocommit=True, row_factory=dict_row)
        self.pid = os.getpid()

    @property
    def closed(self) -> bool:
        return bool(self._c.closed)

    def execute(self, sql: str, args=()):
        cur = self._c.cursor()
        cur.execute(sql.replace("?", "%s"), tuple(args))
        return cur

    def executescript(self, script: str) -> None:
        for stmt in script.split(";"):
            body = "\n".join(ln for ln in stmt.splitlines() if not ln.strip().startswith("--")).strip()
            if body:
                self.execute(body)

    def close(self) -> None:
        self._c.close()


def ensure_database(url: str | None = None) -> str | None:
    """Create the database of ``url`` (default GOVLAKE_STATE_DB) when it does not exist, connecting
    to the server's ``postgres`` database with the URL's credentials (which may create databases:
    compose's ``airflow`` superuser). Returns the database name, or None for the SQLite default.
    docker-compose.yml's airflow-init runs it; ``govlake cluster up`` creates its own with psql."""
    url = state_db_url(url)
    if url is None:
        return None
    parts = urlsplit(url)
    name = parts.path.strip("/")
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise StateDBError(f"{STATE_DB_ENV}={redact(url)!r}: database name {name!r} must be ASCII letters, "
                           "digits and _")
    admin = _PgConn(urlunsplit(parts._replace(path="/postgres")))
    try:
        if admin.execute("select 1 as present from pg_database where datname = ?", (name,)).fetchone() is None:
            admin.execute(f'create database "{name}" encoding \'UTF8\'')
    finally:
        admin.close()
    return name


# ids for pg_advisory_xact_lock: creating the schema (two workers' first ledgers at once)
_PG_SCHEMA_LOCK = 0x676F766C616B6501  # "govlake" + 1

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
    """``url``: a Postgres URL; default ``GOVLAKE_STATE_DB`` (unset: ``<lake>/_meta/ledger.sqlite``)."""

    def __init__(self, lake: Lake, url: str | None = None):
        self.lake = lake
        lake.meta_root.mkdir(parents=True, exist_ok=True)
        self.path = lake.ledger_db
        self.url = state_db_url(url)
        self._pg: _PgConn | None = None
        if self.url is None:
            with self._conn() as c:
                c.executescript(SCHEMA)
        elif not self._pg_schema_present():
            # sizes, inodes and nanosecond times overflow Postgres' 4-byte integer
            with self._transaction(lock=False) as c:
                c.execute("select pg_advisory_xact_lock(?)", (_PG_SCHEMA_LOCK,))
                c.executescript(SCHEMA.replace(" integer", " bigint"))

    def _pg_schema_present(self) -> bool:
        """Tables and index there already: no DDL (its locks would queue behind a writer)."""
        with self._conn() as c:
            row = c.execute("select to_regclass('deliveries') is not null and to_regclass('landing_hashes') "
                            "is not null and to_regclass('deliveries_name') is not null as present").fetchone()
        return bool(row["present"])

    @property
    def backend(self) -> str:
        return "sqlite" if self.url is None else "postgres"

    @contextmanager
    def _conn(self) -> Iterator:
        if self.url is None:
            with sqlite_store.connect(self.path, timeout=120) as c:
                yield c
            return
        if self._pg is None or self._pg.closed or self._pg.pid != os.getpid():
            try:
                self._pg = _PgConn(self.url)
            except Exception as e:
                raise StateDBError(f"{STATE_DB_ENV}={redact(self.url)!r}: cannot connect to the ledger database: "
                                   f"{str(e).replace(self.url, redact(self.url))}") from e
        yield self._pg

    @contextmanager
    def _transaction(self, lock: bool = True) -> Iterator:
        """One writer at a time: SQLite's ``begin immediate`` (the database's write lock), in
        Postgres a ``share row exclusive`` lock on deliveries (conflicts with itself and with
        every writer, not with plain reads), both held to commit/rollback."""
        with self._conn() as c:
            c.execute("begin immediate" if self.url is None else "begin")
            try:
                if self.url is not None and lock:
                    c.execute("lock table deliveries in share row exclusive mode")
                yield c
                c.execute("commit")
            except BaseException:
                c.execute("rollback")
                raise

    def close(self) -> None:
        if self._pg is not None and self._pg.pid == os.getpid():
            self._pg.close()
        self._pg = None

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
            c.execute("insert into landing_hashes values (?, ?, ?, ?, ?, ?) on conflict (source_file) do update set "
                      "size_bytes=excluded.size_bytes, mtime_ns=excluded.mtime_ns, inode=excluded.inode, "
                      "sha256=excluded.sha256, hashed_at_ns=excluded.hashed_at_ns",
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

    def record(self, d: Delivery) -> bool:
        """Add ``d`` (and mark the batch it supersedes), in one transaction. A row for the same
        file (dept, dataset, SHA-256, delivery date) already there — another task recorded it
        first — is kept and nothing changes: False. True when ``d`` was added."""
        with self._transaction() as c:
            cur = c.execute(
                f"insert into deliveries ({','.join(COLUMNS)}) values ({','.join('?' * len(COLUMNS))}) "
                "on conflict (dept, dataset, sha256, delivery_date) do nothing",
                [getattr(d, k) for k in COLUMNS],
            )
            added = cur.rowcount == 1
            if added and d.supersedes and d.status == "ingested":
                c.execute(
                    "update deliveries set superseded_by=? where dept=? and dataset=? and batch_id=? "
                    "and status='ingested'",
                    (d.batch_id, d.dept, d.dataset, d.supersedes),
                )
        return added

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
