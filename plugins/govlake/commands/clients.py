"""``govlake clients add|list|rotate|revoke``: registered clients of the sharing service.

An administrator's command, run on the service's machine as the service's OS user (it writes
the service's private registry). A secret is printed once and stored only hashed.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("clients", help="register, list, rotate and revoke sharing-service clients (admin)")
    csub = c.add_subparsers(dest="clients_command", metavar="ACTION", required=True)
    a = csub.add_parser("add", help="register a client; prints its secret once")
    a.add_argument("client_id", help="e.g. mz-marriage-app (a-z 0-9 _ . -)")
    a.add_argument("--kind", required=True, choices=("app", "analyst", "approver", "citizen_portal", "admin"))
    a.add_argument("--role", default=None, help="its data role (a role of config/grants.yml); apps and analysts need one")
    a.add_argument("--department", required=True)
    a.add_argument("--name", required=True, help="the person (analyst, approver) or system name")
    a.add_argument("--save", action="store_true", help="also write the credentials to the local client file (0600)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_add)
    ls = csub.add_parser("list", help="list clients (never secrets)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    r = csub.add_parser("rotate", help="a new secret; the old one and its tokens stop working at once")
    r.add_argument("client_id")
    r.add_argument("--save", action="store_true")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_rotate)
    v = csub.add_parser("revoke", help="revoke a client at once")
    v.add_argument("client_id")
    v.add_argument("--reason", required=True)
    v.set_defaults(func=_revoke)


def _registry():
    from govlake.sharing.service.identity import Registry
    from govlake.sharing.service.settings import load

    return Registry(load().registry_path)


def _check_role(role: str | None) -> None:
    from govlake import grants

    if role and role not in grants.load():
        raise SystemExit(f"govlake clients: role {role!r} is not in {grants.grants_file()}")


def _print_secret(client, secret: str, args) -> None:
    from govlake.sharing.service.client import save_credentials

    if getattr(args, "save", False):
        from govlake.sharing.service.settings import load

        s = load()
        p = save_credentials(client.client_id, secret, f"http://{s.host}:{s.port}")
        print(f"credentials saved to {p} (mode 0600)", file=sys.stderr)
    if args.json:
        print(json.dumps({**client.public(), "client_secret": secret}, ensure_ascii=False))
    else:
        print(f"client {client.client_id} ({client.kind}, role {client.role or '-'}, {client.department} {client.name})")
        print(f"client_secret: {secret}")
        print("(shown once; stored only as a hash)", file=sys.stderr)


def _add(args) -> int:
    from govlake.sharing.service.identity import IdentityError

    _check_role(args.role)
    try:
        client, secret = _registry().add(args.client_id, kind=args.kind, department=args.department,
                                         name=args.name, role=args.role)
    except IdentityError as exc:
        print(f"govlake clients add: {exc}", file=sys.stderr)
        return 1
    _print_secret(client, secret, args)
    return 0


def _list(args) -> int:
    rows = [c.public() for c in _registry().list()]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for c in rows:
        print(f"{c['client_id']:<28} {c['kind']:<15} {c['role'] or '-':<26} {c['department']:<8} "
              f"{c['name']:<12} {c['status']:<8} gen {c['generation']}")
    return 0


def _rotate(args) -> int:
    from govlake.sharing.service.identity import IdentityError

    try:
        client, secret = _registry().rotate(args.client_id)
    except IdentityError as exc:
        print(f"govlake clients rotate: {exc}", file=sys.stderr)
        return 1
    _print_secret(client, secret, args)
    return 0


def _revoke(args) -> int:
    from govlake.sharing.service.identity import IdentityError

    try:
        c = _registry().revoke(args.client_id, args.reason)
    except IdentityError as exc:
        print(f"govlake clients revoke: {exc}", file=sys.stderr)
        return 1
    print(f"client {c.client_id} revoked at {c.revoked_at}")
    return 0
