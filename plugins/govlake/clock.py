"""The one clock of operations: freshness is measured against the wall clock.

``now()`` is what ``govlake status``, the ``ops_monitor`` DAG, the dashboard and the alerts use
when no explicit time is given, so they agree. It is the wall clock (UTC), unless
``GOVLAKE_NOW`` holds an ISO time — the injectable clock for tests and replays; it reaches
subprocesses (``govlake status``) and Airflow task processes alike. A run's logical date is
*not* a clock: a scheduler run's logical date is the start of its interval (an hour behind),
``govlake run``'s is the end of the delivery day (hours ahead), and a demo dated in the past
would make every delivery "not yet ingested".
"""

from __future__ import annotations

import datetime as dt
import os

UTC = dt.timezone.utc

#: environment variable holding an ISO time that replaces the wall clock (tests, replays)
NOW_ENV = "GOVLAKE_NOW"


def parse_ts(value: str | dt.datetime | dt.date | None) -> dt.datetime | None:
    """ISO timestamp/date → aware UTC datetime (naive values are taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    else:
        s = str(value).strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        d = dt.datetime.fromisoformat(s)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def utcnow() -> dt.datetime:
    """The wall clock in UTC, or ``$GOVLAKE_NOW`` when set (a bad value raises naming it)."""
    raw = os.environ.get(NOW_ENV, "").strip()
    if raw:
        try:
            return parse_ts(raw)
        except ValueError as exc:
            raise ValueError(f"{NOW_ENV}={raw!r} is not an ISO date/time") from exc
    return dt.datetime.now(UTC)


def now(explicit: str | dt.datetime | dt.date | None = None) -> dt.datetime:
    """The time operations are evaluated at: ``explicit`` if given (``--now``), else ``utcnow()``."""
    return parse_ts(explicit) or utcnow()


def _iso(d: dt.datetime | None) -> str | None:
    return d.astimezone(UTC).isoformat() if d else None
