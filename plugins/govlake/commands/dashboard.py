"""``govlake dashboard``: write the operations dashboard page of the catalog site
(``govlake.site.dashboard``) as of ``--now`` (default: the clock)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dashboard", help="write the operations dashboard page of the catalog site")
    d.add_argument("--now", default=None, help="as of this ISO time (naive = UTC); default: now")
    d.set_defaults(func=_dashboard)


def _dashboard(args) -> int:
    from govlake import clock
    from govlake.site import dashboard
    from govlake.storage import Lake

    try:
        now = clock.parse_ts(args.now) if args.now else None
    except ValueError:
        print(f"govlake dashboard: --now {args.now!r} is not an ISO date/time", file=sys.stderr)
        return 2
    path = dashboard.build(Lake.default(), now)
    print(f"dashboard written: {path}")
    return 0
