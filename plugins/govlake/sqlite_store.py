"""One way to open the lake's small SQLite state stores (ledger, alert registry): WAL, full
fsync on commit, rows by name, autocommit (callers open ``begin immediate`` when they need a
transaction). Concurrent writers from several processes wait up to ``timeout`` seconds."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def connect(path: Path | str, timeout: float = 60) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        _wal(conn, timeout)
        conn.execute("pragma synchronous=full")
        yield conn
    finally:
        conn.close()


def _wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode (persistent: usually already done). Switching needs an
    exclusive lock and SQLite answers "database is locked" at once, without its busy wait, when
    two processes open a new store at the same moment: retry until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if str(conn.execute("pragma journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
