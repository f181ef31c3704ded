"""``govlake audit``: the tamper-evident audit log (verify, show)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = asub.add_parser("verify", help="check the whole hash chain; exit 1 naming the first bad entry")
    v.set_defaults(func=_audit_verify)
    s = asub.add_parser("show", help="print the last entries")
    s.add_argument("-n", type=int, default=20)
    s.add_argument("--kind", default=None)
    s.set_defaults(func=_audit_show)


def _audit_verify(args) -> int:
    from govlake import audit
    from govlake.storage import Lake

    lake = Lake.default()
    res = audit.verify(lake)
    print(f"{audit.log_path(lake)}: {res}")
    return 0 if res.ok else 1


def _audit_show(args) -> int:
    import json

    from govlake import audit
    from govlake.storage import Lake

    rows = audit.entries(Lake.default())
    if args.kind:
        rows = [r for r in rows if r.get("kind") == args.kind]
    for r in rows[-args.n:]:
        print(json.dumps(r, ensure_ascii=False))
    return 0
