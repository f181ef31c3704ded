"""The ``govlake`` command.

Each area registers its own subcommands from its own module (a ``register(subparsers)``
function), listed in ``_COMMAND_MODULES``; this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys

from govlake import config

_COMMAND_MODULES = [
    "govlake.commands.core",
    "govlake.commands.ops",
    "govlake.commands.query",
    "govlake.commands.catalog",
    "govlake.commands.access",
    "govlake.commands.dashboard",
    "govlake.commands.audit",
    "govlake.commands.serve",
    "govlake.commands.clients",
    "govlake.commands.accesses",
    "govlake.commands.cluster",
    "govlake.commands.keys",
    "govlake.commands.scaffold",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="govlake",
        description="govlake — government data-sharing lake. Lake root: $GOVLAKE_LAKE_ROOT "
        f"(now {config.lake_root()}).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    env = sub.add_parser("env", help="print the environment (lake root, embedded Airflow) as shell exports")
    env.set_defaults(func=_cmd_env)
    for mod in _COMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def _cmd_env(args: argparse.Namespace) -> int:
    for k, v in config.full_env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
