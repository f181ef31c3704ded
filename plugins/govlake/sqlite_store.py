"""One way to open the lake's small SQLite state stores (ledger, alert registry): WAL, full
fsync on commit, rows by name, autocommit (callers open ``begin immediate`` when they need a
transaction). Concurrent writers from several processes wait up to ``timeout`` seconds."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def connect(path: Path | str, timeout: float = 60) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=full")
        yield conn
    finally:
        conn.close()
