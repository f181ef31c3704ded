"""Operations subcommand: ``govlake status``."""

from __future__ import annotations

import argparse
import json
import sys

EXIT_HELP = """exit codes:
  0  every feed of every registered department is on time and no gate is failing
  1  something needs attention: a feed is late, failing (latest delivery quarantined or its
     staging gate failed) or never delivered, the latest gate of some model failed, or the
     landing zone holds an anomaly extraction refused (a symlink, a folder of an undeclared
     department or dataset, a folder not named YYYY-MM-DD or dated in the future)
  2  usage error (bad option or --now value)
"""

_STYLE = {"on_time": "green", "late": "yellow", "failing": "bold red", "never_delivered": "red"}


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "status",
        help="per-department freshness, 互联互通率, failed gates and landing anomalies; exit 1 when anything "
             "needs attention",
        description="Freshness of every registered feed (on time / late / failing / never delivered), "
                    "the last delivery and last publish per department, the platform 互联互通率 "
                    "(departments whose every feed is on time / registered departments) and the most "
                    "recent failed gate.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--now", default=None,
                   help="evaluate as of this ISO time (e.g. 2026-11-27T08:00:00+08:00; naive = UTC); default: "
                        "the wall clock (or $GOVLAKE_NOW), the same clock as the ops_monitor DAG")
    s.add_argument("--json", action="store_true", help="print the full status as JSON instead of a table")
    s.set_defaults(func=_status)


def _fmt_time(d) -> str:
    return d.strftime("%Y-%m-%d %H:%M UTC") if d else "—"


def _status(args: argparse.Namespace) -> int:
    from govlake import ops
    from govlake.storage import Lake

    try:
        now = ops.now(args.now)  # the one clock, shared with ops_monitor and the dashboard
    except ValueError as exc:
        what = f"--now {args.now!r} is not an ISO date/time" if args.now else str(exc)
        print(f"govlake status: {what}", file=sys.stderr)
        return 2
    lake = Lake.default()
    c = ops.compute(lake, now)
    rc = 0 if c.healthy else 1
    if args.json:
        print(json.dumps({**c.to_dict(), "exit_code": rc}, ensure_ascii=False, indent=2))
        return rc

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"govlake status — {_fmt_time(c.now)} — lake {lake.root}")
    for col in ("department", "state", "feeds", "last delivery", "last publish"):
        table.add_column(col)
    for d in c.departments:
        style = _STYLE[d.state]
        feeds = "\n".join(
            f"[{_STYLE[f.state]}]{f.dataset}[/]: {ops.STATE_LABELS[f.state]} — {f.reason}" for f in d.feeds)
        last_delivery = (f"{d.last_delivery_date} (ingested {_fmt_time(d.last_ingested_at)})"
                         if d.last_delivery_date else "—")
        pub = d.last_publish
        last_pub = f"{pub[0]} v{pub[1]} at {_fmt_time(pub[2])}" if pub else "—"
        table.add_row(f"{d.department} ({d.dept})", f"[{style}]{d.state} {ops.STATE_LABELS[d.state]}[/]",
                      feeds, last_delivery, last_pub)
    console.print(table)
    console.print(f"互联互通率 (connectivity rate): [bold]{c.rate:.1%}[/] — "
                  f"{c.on_time_departments} of {c.registered_departments} departments have every feed on time")
    g = c.last_failed_gate
    if g is None:
        console.print("most recent failed gate: none")
    else:
        still = any((f.layer, f.model) == (g.layer, g.model) for f in c.failing_gates)
        console.print(f"most recent failed gate: {g.layer}/{g.model} (suite {g.suite}) run {g.run_id} at "
                      f"{_fmt_time(g.at)}{'' if still else ' [resolved since]'}: {g.reason}")
    for f in c.failing_gates:
        if f is not g:
            console.print(f"  still failing: {f.layer}/{f.model} run {f.run_id}: {f.reason}")
    if c.landing_anomalies:
        console.print(f"[bold red]landing anomalies[/] ({len(c.landing_anomalies)}, nothing ingested from them):")
        for a in c.landing_anomalies:
            where = f" — reason.json in {a.quarantine_dir}" if a.quarantine_dir else ""
            console.print(f"  {a.message} (since {_fmt_time(ops.parse_ts(a.first_seen_at))}){where}",
                          soft_wrap=True, markup=False)
    else:
        console.print("landing anomalies: none")
    console.print("[green]all feeds on time, no gate failing[/]" if rc == 0 else
                  "[bold red]attention needed[/] (exit 1)")
    return rc
