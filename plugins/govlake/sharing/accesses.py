"""Per-person access records: who used a person's data, when, why, which resource and fields.

Every lookup, verification and row-returning query of the sharing service records the join
tokens (keyed HMAC of the ID number, never the clear number) of the persons it returned or
checked; aggregates record nothing per person. The evidence is the audit log (the outcome
entry of each request carries ``persons``); this SQLite index, ``<lake>/_meta/service/
accesses.sqlite``, answers "who read my data" quickly and can be rebuilt from the log
(:func:`rebuild`).

Compact storage: one row per request (``requests``) and one row per (person, request)
(``person_requests``: the 32-byte digest of the token as a BLOB plus the request's audit seq,
``WITHOUT ROWID``, clustered by digest).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from govlake import audit
from govlake.storage import Lake

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq         INTEGER PRIMARY KEY,   -- the request's audit entry (intent)
    ts          TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    department  TEXT NOT NULL,
    name        TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    resource    TEXT NOT NULL,
    fields      TEXT NOT NULL          -- JSON list
);
CREATE TABLE IF NOT EXISTS person_requests (
    person  BLOB NOT NULL,             -- 32-byte HMAC digest of the ID number (the join token's)
    seq     INTEGER NOT NULL,
    PRIMARY KEY (person, seq)
) WITHOUT ROWID;
"""


def store_path(lake: Lake) -> Path:
    return lake.person_accesses_db


def digest(token: str) -> bytes:
    """The 32 bytes of a ``v1:<hex>`` join token."""
    if not isinstance(token, str) or not token.startswith("v1:") or len(token) != 67:
        raise ValueError(f"not a join token: {token[:12] if isinstance(token, str) else token!r}…")
    return bytes.fromhex(token[3:])


class AccessLog:
    def __init__(self, lake: Lake):
        self.path = store_path(lake)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._con().executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # the audit log is the durable evidence
            self._local.con = con
        return con

    def record(self, *, seq: int, ts: str, actor: dict, purpose: str, endpoint: str, resource: str,
               fields: list[str], persons: list[str]) -> None:
        if not persons:
            return
        con = self._con()
        con.execute("BEGIN")
        try:
            con.execute("INSERT OR IGNORE INTO requests VALUES (?,?,?,?,?,?,?,?,?)",
                        (seq, ts, actor.get("client_id", ""), actor.get("department", ""), actor.get("name", ""),
                         purpose, endpoint, resource, json.dumps(sorted(fields), ensure_ascii=False)))
            con.executemany("INSERT OR IGNORE INTO person_requests VALUES (?, ?)",
                            [(digest(t), seq) for t in persons])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def of(self, token: str) -> list[dict]:
        rows = self._con().execute(
            "SELECT r.seq, r.ts, r.client_id, r.department, r.name, r.purpose, r.endpoint, r.resource, r.fields "
            "FROM person_requests p JOIN requests r ON r.seq = p.seq WHERE p.person = ? ORDER BY r.seq",
            (digest(token),)).fetchall()
        return [{"audit_seq": s, "at": ts, "client_id": c, "department": d, "who": n, "purpose": pu,
                 "interface": e, "resource": res, "fields": json.loads(f)}
                for s, ts, c, d, n, pu, e, res, f in rows]


def rebuild(lake: Lake) -> int:
    """Re-create the index from the audit log (the evidence); returns the number of requests."""
    p = store_path(lake)
    for suffix in ("", "-wal", "-shm"):
        Path(str(p) + suffix).unlink(missing_ok=True)
    log = AccessLog(lake)
    intents = {}
    n = 0
    for e in audit.entries(lake):
        if e["kind"] == "request":
            intents[e["seq"]] = e
        elif e["kind"] == "outcome":
            out = (e["payload"].get("outcome") or {})
            i = intents.pop(e["payload"].get("intent_seq"), None)
            if i is None or not out.get("persons"):
                continue
            pl = i["payload"]
            log.record(seq=i["seq"], ts=i["ts"], actor=pl.get("actor") or {}, purpose=pl.get("purpose", ""),
                       endpoint=pl.get("request_kind", ""), resource=pl.get("resource") or ",".join(
                           sorted((out.get("versions") or {}).keys())),
                       fields=out.get("fields") or [], persons=out["persons"])
            n += 1
    return n
