"""``govlake audit``: the tamper-evident audit log (verify, show, repair, checkpoint)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = a.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = asub.add_parser("verify", help="check the whole hash chain against head.json, the catalog "
                        "anchor and every signed checkpoint; exit 1 naming the first bad entry")
    v.set_defaults(func=_audit_verify)
    s = asub.add_parser("show", help="print the last entries")
    s.add_argument("-n", type=int, default=20)
    s.add_argument("--kind", default=None)
    s.set_defaults(func=_audit_show)
    r = asub.add_parser("repair", help="seal a torn last line (crash, full disk): keep every "
                        "complete entry, move the torn bytes to audit/torn-<ts>.bin, record a "
                        "repair entry; refuses anything else")
    r.set_defaults(func=_audit_repair)
    c = asub.add_parser("checkpoint", help="sign the log's current state (Ed25519) and export it "
                        "to every witness")
    c.add_argument("--reason", default="manual", help="why (recorded and signed)")
    c.set_defaults(func=_audit_checkpoint)


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


def _audit_repair(args) -> int:
    import sys

    from govlake import audit
    from govlake.storage import Lake

    lake = Lake.default()
    try:
        e = audit.repair(lake)
    except audit.AuditError as exc:
        print(f"govlake audit repair: {exc}", file=sys.stderr)
        return 1
    if e is None:
        print(f"{audit.log_path(lake)}: nothing to repair (the log is valid and its last line complete)")
        return 0
    p = e["payload"]
    print(f"{audit.log_path(lake)}: sealed a torn last line (line {p['torn_line']}, {p['torn_bytes']} "
          f"bytes, sha256 {p['torn_sha256'][:16]}…) kept in {audit.log_path(lake).parent / p['evidence']}; "
          f"{p['last_complete_seq']} complete entries kept; repair recorded as entry {e['seq']}")
    return 0


def _audit_checkpoint(args) -> int:
    import sys

    from govlake import audit
    from govlake.storage import Lake

    lake = Lake.default()
    try:
        rec = audit.checkpoint(lake, args.reason)
    except audit.AuditError as exc:
        print(f"govlake audit checkpoint: {exc}", file=sys.stderr)
        return 1
    print(f"checkpoint {rec['checkpoint']} signed (key {rec['key_id']}): {rec['count']} entries, "
          f"last hash {rec['last_hash'][:16]}…; copies: {audit.checkpoints_path(lake)}"
          + "".join(f", {w}" for w in audit.witness_files(lake)))
    return 0
