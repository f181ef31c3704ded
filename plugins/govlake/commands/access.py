"""Conditional-sharing subcommands: ``govlake access request|list|approve|reject|revoke``.

Exit codes: 0 done; 1 error (not found, wrong state, bad input); 3 refused (不予共享 product,
approver not authorised).
"""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """examples (request/approve/reject/revoke go through the sharing service as the registered
client whose credentials this shell holds; the role, approver and department are that registration's):
  govlake access request --product population_base --purpose 婚姻登记核验
  govlake access list --pending --department 公安          (admin, on the service's machine)
  govlake access approve R-1 --days 90 --reason "符合共享条件"
  govlake access reject R-2 --reason "用途与共享条件不符"
  govlake access revoke G-1 --reason "项目结束"

exit codes: 0 done, 1 error (not found / wrong state / bad input), 3 refused
(不予共享 product, approver not of the owning department or not registered)
"""


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "access", help="conditional-sharing requests: request, list, approve, reject, revoke",
        description="The 有条件共享 workflow: a role requests a product for a purpose; a registered approver "
                    "of the product's owning department (config/approvers.yml) approves (creating a grant "
                    "with an expiry) or rejects; revoke ends a grant. 不予共享 products cannot be requested; "
                    "无条件共享 ones are granted without approval. Every step is in the audit log.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    asub = a.add_subparsers(dest="access_command", metavar="ACTION", required=True)

    r = asub.add_parser("request", help="file a request for a product")
    r.add_argument("--product", required=True, help="published product name")
    r.add_argument("--purpose", required=True, help="what the data will be used for (recorded in the grant)")
    r.add_argument("--columns", default=None, help="comma-separated columns (default: every column)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_request)

    ls = asub.add_parser("list", help="list requests (and their grants)")
    ls.add_argument("--pending", action="store_true", help="only requests awaiting a decision")
    ls.add_argument("--department", default=None, help="only products owned by this department")
    ls.add_argument("--role", default=None)
    ls.add_argument("--grants", action="store_true", help="list grants (with their state) instead of requests")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    for name, helptext in (("approve", "approve a pending request (creates a grant with an expiry)"),
                           ("reject", "reject a pending request"),
                           ("revoke", "revoke a grant now")):
        p = asub.add_parser(name, help=helptext)
        p.add_argument("id", help="grant id (G-<n>)" if name == "revoke" else "request id (R-<n>)")
        p.add_argument("--reason", required=True)
        if name == "approve":
            g = p.add_mutually_exclusive_group()
            g.add_argument("--days", type=int, default=None, help="validity in days (default 90, at most 366)")
            g.add_argument("--expires", default=None, help="last valid day YYYY-MM-DD")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func={"approve": _approve, "reject": _reject, "revoke": _revoke}[name])


def _console(stderr=False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200, highlight=False)


def _fail(exc) -> int:
    from govlake import access_requests as ar

    refused = isinstance(exc, (ar.NotShareable, ar.NotAuthorized))
    _console(stderr=True).print(f"[bold red]{'REFUSED' if refused else 'ERROR'}[/bold red] {exc}")
    return 3 if refused else 1


def _lake():
    from govlake.storage import Lake

    return Lake.default()


def _service(path: str, body: dict):
    """POST to the sharing service as the registered client of this shell (its credentials):
    the role, the approver's name and department come from that registration."""
    from govlake.sharing.service.client import Credentials, ServiceClient, ServiceError

    try:
        client = ServiceClient(Credentials.from_env())
        try:
            return client.post(path, body), None
        finally:
            client.close()
    except ServiceError as exc:
        refused = exc.status in (401, 403)
        _console(stderr=True).print(f"[bold red]{'REFUSED' if refused else 'ERROR'}[/bold red] "
                                    f"({exc.status}) {exc.problem.get('detail') or exc}")
        return None, (3 if refused else 1)


def _request(args) -> int:
    cols = [c.strip() for c in args.columns.split(",")] if args.columns else None
    req, rc = _service("/v1/access-requests", {"product": args.product, "purpose": args.purpose, "columns": cols})
    if rc is not None:
        return rc
    if args.json:
        print(json.dumps(req, ensure_ascii=False, indent=2))
    elif req["status"] == "auto_granted":
        print(f"{req['request_id']} auto-granted ({req['sharing_type']}, no approval needed): grant "
              f"{req['grant_id']} for {req['role']} on {req['product']}, purpose {req['purpose']}")
    else:
        print(f"{req['request_id']} filed: {req['role']} requests {req['product']} for {req['purpose']!r}"
              f"{' (columns ' + ', '.join(req['columns']) + ')' if req['columns'] else ''}; "
              f"pending approval by {req['owner_department']}")
    return 0


def _list(args) -> int:
    from rich.table import Table

    from govlake import access_requests as ar

    lake = _lake()
    try:
        if args.grants:
            rows = [g for g in ar.list_grants(lake, role=args.role)]
            if args.department:
                owners = {r.id: r.owner_department for r in ar.list_requests(lake)}
                rows = [g for g in rows if owners.get(g.request_id) == args.department]
            if args.json:
                print(json.dumps([g.to_dict() for g in rows], ensure_ascii=False, indent=2))
                return 0
            t = Table(title="access grants")
            for c in ("grant", "request", "role", "product", "purpose", "columns", "by", "expires", "state"):
                t.add_column(c, overflow="fold")
            for g in rows:
                st = g.state()
                note = f"{st}: {g.revoke_reason}" if st == "revoked" else st
                t.add_row(g.ref, f"R-{g.request_id}", g.role, g.product, g.purpose,
                          ", ".join(g.columns) if g.columns else "all",
                          f"{g.granted_by} ({g.granted_department})", g.expires.isoformat(), note)
            _console().print(t)
            return 0
        rows = ar.list_requests(lake, status="pending" if args.pending else None, department=args.department,
                                role=args.role)
        grants = {g.id: g for g in ar.list_grants(lake)}
    except ar.AccessRequestError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], ensure_ascii=False, indent=2))
        return 0
    t = Table(title="access requests" + (" (pending)" if args.pending else ""))
    for c in ("id", "role", "product", "owner", "purpose", "columns", "requester", "requested", "status",
              "decision", "grant"):
        t.add_column(c, overflow="fold")
    for r in rows:
        g = grants.get(r.grant_id) if r.grant_id is not None else None
        decision = f"{r.decided_by or ''}{' (' + r.decided_department + ')' if r.decided_department else ''}" \
                   f"{': ' + r.decision_reason if r.decision_reason else ''}"
        t.add_row(r.ref, r.role, r.product, r.owner_department, r.purpose,
                  ", ".join(r.columns) if r.columns else "all", r.requester, r.requested_at, r.status,
                  decision, f"{g.ref} {g.state()} until {g.expires.isoformat()}" if g else "")
    _console().print(t)
    return 0


def _decide(args, path: str, summary, **extra) -> int:
    """One approver decision (approve, reject, revoke) through the sharing service."""
    body = {"reason": args.reason, **{k: v for k, v in extra.items() if v is not None}}
    obj, rc = _service(path, body)
    if rc is not None:
        return rc
    print(json.dumps(obj, ensure_ascii=False, indent=2) if args.json else summary(obj))
    return 0


def _approve(args) -> int:
    return _decide(args, f"/v1/access-requests/{args.id}/approve", lambda g: (
        f"{g['request_id']} approved by {g['granted_by']} ({g['granted_department']}): grant {g['grant_id']} for "
        f"{g['role']} on {g['product']}, purpose {g['purpose']!r}"
        f"{', columns ' + ', '.join(g['columns']) if g['columns'] else ''}, valid until {g['expires']}"),
        days=args.days, expires=args.expires)


def _reject(args) -> int:
    return _decide(args, f"/v1/access-requests/{args.id}/reject", lambda r: (
        f"{r['request_id']} rejected by {r['decided_by']} ({r['decided_department']}): {r['decision_reason']}"))


def _revoke(args) -> int:
    return _decide(args, f"/v1/grants/{args.id}/revoke", lambda g: (
        f"{g['grant_id']} revoked by {g['revoked_by']} ({g['revoked_department']}) at {g['revoked_at']}: "
        f"{g['revoke_reason']}"))
