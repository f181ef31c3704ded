"""The lake's SQLite state stores open in WAL mode even when several processes open a new store at
the same moment (SQLite refuses the switch to WAL at once, without its busy wait, while another
connection holds the lock)."""

from __future__ import annotations

import multiprocessing as mp

from govlake import sqlite_store


def _open(path: str, barrier, errors) -> None:
    barrier.wait()
    try:
        with sqlite_store.connect(path, timeout=10) as conn:
            conn.execute("create table if not exists t (x integer)")
            conn.execute("insert into t values (1)")
            assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    except Exception as exc:  # reported to the parent
        errors.put(repr(exc))


def test_new_store_opened_by_many_processes_at_once(tmp_path):
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(8):
        path = str(tmp_path / f"state{round_}.sqlite")
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open, args=(path, barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        with sqlite_store.connect(path) as conn:
            assert conn.execute("select count(*) from t").fetchone()[0] == 6
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found
