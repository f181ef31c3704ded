"""Core subcommands: generate, run, demo, airflow-init."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="write one synthetic delivery of every feed into landing/")
    g.add_argument("--people", type=int, required=True, help="number of synthetic people")
    g.add_argument("--date", required=True, help="delivery date YYYY-MM-DD")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--fault-rate", type=float, default=None,
                   help="scale every feed's fault rates (default: realistic per-feed rates)")
    g.add_argument("--truth", default=None,
                   help="also write ground truth (standardized values, invalid rows) to this folder")
    g.set_defaults(func=_generate)

    r = sub.add_parser("run", help="run the pipeline through Airflow (in-process, no server)")
    r.add_argument("--date", default=None, help="logical date YYYY-MM-DD (default: today)")
    r.add_argument("--only", nargs="*", default=None, help="department ids to extract (default: all)")
    r.add_argument("--wait", action="store_true",
                   help="if another govlake run holds the lake, wait for it instead of exiting (code 75)")
    r.set_defaults(func=_run)

    d = sub.add_parser("demo", help="generate a small synthetic day and run the pipeline end to end")
    d.add_argument("--people", type=int, default=2000)
    d.add_argument("--date", default=None, help="delivery date YYYY-MM-DD (default: today)")
    d.add_argument("--seed", type=int, default=42)
    d.set_defaults(func=_demo)

    a = sub.add_parser("airflow-init", help="create/migrate the embedded Airflow metadata DB")
    a.set_defaults(func=_airflow_init)


def _generate(args):
    from govlake_synth import generate

    generate.cli(args)
    return 0


def _run(args):
    from govlake import runner

    return runner.cli_run(args)


def _demo(args):
    import datetime as dt

    from govlake import runner

    args.date = args.date or dt.date.today().isoformat()  # today's delivery: fresh on the day it runs
    return runner.cli_demo(args)


def _airflow_init(args):
    from govlake import runner

    runner.ensure_airflow_db()
    return 0
