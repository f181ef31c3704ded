"""``govlake scaffold``: generate every file a feed needs from its source YAML (govlake.scaffold)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "scaffold",
        help="generate the dbt models, models YAML, dbt vars and GX suites of every feed from its source YAML",
        description="Reads dbt_project/models/staging/*/_*__sources.yml and (re)writes the per-feed stg_/chk_/"
                    "int_/ds_ models, the models YAML, the govlake_datasets/govlake_person_keys vars of "
                    "dbt_project.yml and the GX suites (expectations/standardized/stg_*.json, "
                    "expectations/shared/ds_*.json). Reviewed suite additions go in "
                    "expectations/standardized/overrides/<model>.json, which is never written.",
    )
    s.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 naming every generated file that is out of date")
    s.set_defaults(func=_scaffold)


def _scaffold(args: argparse.Namespace) -> int:
    from govlake import config, metadata, scaffold

    try:
        changes = scaffold.check() if args.check else scaffold.write()
    except metadata.MetadataError as e:
        print(f"govlake scaffold: {e}", file=sys.stderr)
        return 2
    root = config.project_root()
    for ch in changes:
        rel = ch.path.relative_to(root) if ch.path.is_relative_to(root) else ch.path
        verb = {"new": "missing" if args.check else "created", "changed": "out of date" if args.check else "updated",
                "stale": "stale (no feed declares it)" if args.check else "deleted"}[ch.status]
        print(f"{rel}: {verb}", file=sys.stderr if args.check else sys.stdout)
    n = len(metadata.datasets())
    if args.check:
        if changes:
            print(f"govlake scaffold --check: {len(changes)} generated file(s) out of date; run `govlake scaffold` "
                  "(or `make models`)", file=sys.stderr)
            return 1
        print(f"govlake scaffold --check: every generated file of {n} feed(s) is up to date")
        return 0
    print(f"govlake scaffold: {n} feed(s), {len(changes)} file(s) written")
    return 0
