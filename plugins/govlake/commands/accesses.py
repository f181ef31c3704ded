"""``govlake accesses --id-number X``: who used a person's data (operator, on the service's machine)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("accesses", help="who used a person's data (per-person access records)",
                       description="Lists every lookup, verification and row-returning query of the sharing "
                                   "service that returned or checked this person: who (client, department), "
                                   "when, purpose, resource and fields. Reads the service's index, by join token.")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--id-number", help="the person's ID number (turned into its join token; never stored)")
    g.add_argument("--token", help="the person's join token (v1:…)")
    a.add_argument("--rebuild", action="store_true", help="rebuild the index from the audit log first")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_accesses)


def _accesses(args) -> int:
    from govlake import masking
    from govlake.sharing import accesses
    from govlake.sharing.service.app import normalise_claim
    from govlake.storage import Lake

    lake = Lake.default()
    if args.rebuild:
        print(f"rebuilt from the audit log: {accesses.rebuild(lake)} requests", file=sys.stderr)
    token = args.token
    if args.id_number:
        try:
            token = masking.token("id_number", normalise_claim("id_number", args.id_number), masking.load_key(),
                                  "sha256")
        except masking.TokenKeyError as exc:
            print(f"govlake accesses: {exc}", file=sys.stderr)
            return 2
    try:
        rows = accesses.AccessLog(lake).of(token)
    except ValueError as exc:
        print(f"govlake accesses: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no recorded use of this person's data")
    for r in rows:
        print(f"{r['at']}  {r['department']} {r['who']} ({r['client_id']})  {r['interface']} {r['resource']} "
              f"[{', '.join(r['fields'])}]  purpose {r['purpose']}  audit #{r['audit_seq']}")
    return 0
