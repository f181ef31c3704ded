"""Landing anomalies: what extraction found in ``landing/`` and refused to read.

Extraction (``govlake.ingest.scan_landing``) lists the landing zone without following any
symbolic link and reports, once per path, every entry it will not ingest:

==============================  ==========================================================
``landing.symlink``             a symbolic link, at any level (nothing is read through it)
``landing.undeclared_department``  ``landing/<dept>/`` of no declared department
``landing.undeclared_dataset``  ``landing/<dept>/<dataset>/`` of no declared dataset
``landing.not_a_date``          a delivery folder whose name is not a YYYY-MM-DD date
``landing.future_date``         a delivery folder dated after the run's delivery date and
                                after today's date everywhere on Earth (UTC+14)
``landing.misplaced_file``      a file where only folders belong (outside a date folder)
==============================  ==========================================================

The record is ``Lake.landing_anomalies_db`` (SQLite, one row per landing path, primary key the
path relative to the landing root). A scan covers a *scope* — ``""`` (the landing root and the
department folders) or ``<dept>/<dataset>`` (one dataset's folder) — and closes (``resolved_at``)
the open anomalies of its scope it no longer finds; the same path found again later reopens its
row. ``govlake status``, the dashboard and the alerts (``landing_anomaly:<path>``) read the open
anomalies as of ``now`` (``clock.now()`` by default).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Iterable

from govlake import sqlite_store
from govlake.clock import _iso, now as clock_now, parse_ts
from govlake.storage import Lake

KINDS = ("landing.symlink", "landing.undeclared_department", "landing.undeclared_dataset",
         "landing.not_a_date", "landing.future_date", "landing.misplaced_file")
TOP_SCOPE = ""

_SCHEMA = """
create table if not exists landing_anomalies (
    path           text primary key,
    kind           text not null,
    scope          text not null,
    dept           text,
    dataset        text,
    delivery_date  text,
    message        text not null,
    link_target    text,
    quarantine_dir text,
    first_seen_at  text not null,
    last_seen_at   text not null,
    resolved_at    text,
    times_seen     integer not null default 1
);
create index if not exists landing_anomalies_scope on landing_anomalies (scope, resolved_at);
"""


@dataclass
class LandingAnomaly:
    path: str  # relative to the landing root, '/'-separated
    kind: str
    scope: str
    message: str
    dept: str | None = None
    dataset: str | None = None
    delivery_date: str | None = None
    link_target: str | None = None  # a symlink's target text (never followed, never read)
    quarantine_dir: str | None = None  # where its reason.json is, relative to the lake root
    first_seen_at: str | None = None
    last_seen_at: str | None = None
    resolved_at: str | None = None
    times_seen: int = 1

    @property
    def feed(self) -> str | None:
        return f"{self.dept}.{self.dataset}" if self.dept and self.dataset else None

    def problem(self) -> dict:
        """The entry an extraction summary lists under ``problems``."""
        prefix = f"landing/{self.path}: rule {self.kind}: "
        return {"file": f"landing/{self.path}", "reason": self.kind, "message": self.message.removeprefix(prefix),
                "anomaly": True}

    def to_dict(self) -> dict:
        return asdict(self)


def _conn(lake: Lake):
    lake.meta_root.mkdir(parents=True, exist_ok=True)
    return sqlite_store.connect(lake.landing_anomalies_db, timeout=60)


def _init(c) -> None:
    c.executescript(_SCHEMA)


def record_scan(lake: Lake, scope: str, found: Iterable[LandingAnomaly], *, complete: bool = True,
                now: dt.datetime | str | None = None) -> list[LandingAnomaly]:
    """Record the anomalies a scan of ``scope`` found (one row per path: a path seen again only
    updates ``last_seen_at``); with ``complete`` (the scan listed the whole scope) close the
    open anomalies of the scope that were not found. Returns the anomalies first recorded (or
    reopened) now."""
    at = _iso(clock_now(now))
    found = list(found)
    new: list[LandingAnomaly] = []
    with _conn(lake) as c:
        _init(c)
        c.execute("begin immediate")
        try:
            for a in found:
                row = c.execute("select kind, resolved_at from landing_anomalies where path=?", (a.path,)).fetchone()
                if row is not None and row["resolved_at"] is None and row["kind"] == a.kind:
                    c.execute("update landing_anomalies set last_seen_at=?, message=?, link_target=?, "
                              "quarantine_dir=coalesce(?, quarantine_dir), times_seen=times_seen+1 where path=?",
                              (at, a.message, a.link_target, a.quarantine_dir, a.path))
                    continue
                c.execute("insert or replace into landing_anomalies (path, kind, scope, dept, dataset, delivery_date, "
                          "message, link_target, quarantine_dir, first_seen_at, last_seen_at, resolved_at, times_seen) "
                          "values (?,?,?,?,?,?,?,?,?,?,?,null,1)",
                          (a.path, a.kind, a.scope, a.dept, a.dataset, a.delivery_date, a.message, a.link_target,
                           a.quarantine_dir, at, at))
                a.first_seen_at = a.last_seen_at = at
                new.append(a)
            if complete:
                paths = {a.path for a in found}
                for row in c.execute("select path from landing_anomalies where scope=? and resolved_at is null",
                                     (scope,)).fetchall():
                    if row["path"] not in paths:
                        c.execute("update landing_anomalies set resolved_at=? where path=?", (at, row["path"]))
            c.execute("commit")
        except BaseException:
            c.execute("rollback")
            raise
    return new


def landing_anomalies(lake: Lake, now: dt.datetime | str | None = None, *,
                      include_resolved: bool = False) -> list[LandingAnomaly]:
    """The anomalies open at ``now`` (first seen at or before it, not resolved by then), ordered
    by path; ``include_resolved``: every row ever recorded (first seen at or before ``now``)."""
    if not lake.landing_anomalies_db.exists():
        return []
    at = clock_now(now)
    with _conn(lake) as c:
        _init(c)
        rows = [dict(r) for r in c.execute("select * from landing_anomalies order by path")]
    out = []
    for r in rows:
        first = parse_ts(r["first_seen_at"])
        if first is not None and first > at:
            continue
        resolved = parse_ts(r["resolved_at"])
        if not include_resolved and resolved is not None and resolved <= at:
            continue
        out.append(LandingAnomaly(**r))
    return out
