"""``govlake query`` (one read-only SELECT, masked and audited) and ``govlake verify`` (核验), both
clients of the sharing service."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="one read-only SELECT through the sharing service (masked, audited)",
                       description="A client of the sharing service (govlake serve): your role comes from "
                                   "your client registration, not from this command. Credentials: "
                                   "GOVLAKE_CLIENT_ID / GOVLAKE_CLIENT_SECRET or ~/.config/govlake/credentials.json; "
                                   "service URL: GOVLAKE_SERVICE_URL (default http://127.0.0.1:8765).")
    q.add_argument("--purpose", required=True, help="purpose of the query (must be granted to your role)")
    q.add_argument("sql", help="one SELECT statement")
    q.add_argument("--format", choices=("table", "json", "csv", "parquet", "arrow"), default="table")
    q.add_argument("--output", default=None, help="write the result to this file (required for parquet/arrow)")
    q.add_argument("--limit", default=None,
                   help="row limit (default: the server's, 1000); 'all' for every row your grant allows")
    q.add_argument("--timeout", type=float, default=None, help="seconds (at most the server's limit)")
    q.set_defaults(func=_query)

    v = sub.add_parser("verify", help="核验 through the sharing service: match / no_match per claimed field")
    v.add_argument("--resource", required=True, help="e.g. population_base")
    v.add_argument("--purpose", required=True)
    v.add_argument("claims", nargs="+", help="claims as field=value,field=value (e.g. id_number=…,name=张三)")
    v.set_defaults(func=_verify)


def _client():
    from govlake.sharing.service.client import Credentials, ServiceClient

    return ServiceClient(Credentials.from_env())


def _query(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from govlake.sharing.service.client import ServiceError

    err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)
    if args.format in ("parquet", "arrow") and not args.output:
        err.print(f"[red]--format {args.format} needs --output FILE[/red]")
        return 2
    limit = "default" if args.limit is None else (None if args.limit == "all" else int(args.limit))
    wire = "json" if args.format == "table" else args.format
    try:
        client = _client()
        r = client.query(args.sql, args.purpose, wire, limit=limit, timeout=args.timeout)
    except ServiceError as exc:
        word = "REFUSED" if exc.status in (401, 403, 422) else "FAILED"
        err.print(f"[bold red]{word}[/bold red] ({exc.status}) {exc.problem.get('detail') or exc}")
        return 3 if exc.status in (401, 403, 422) else 4
    versions = r.headers.get("X-Govlake-Versions", "{}")
    seq = r.headers.get("X-Govlake-Audit-Seq", "?")
    if args.format != "table":
        if args.output:
            with open(args.output, "wb") as fh:
                fh.write(r.content)
        else:
            sys.stdout.buffer.write(r.content)
        err.print(f"products {versions}; audit #{seq}", highlight=False)
        return 0
    doc = r.json()
    t = Table(show_lines=False)
    for name in doc["columns"]:
        t.add_column(name, overflow="fold")
    for row in doc["rows"]:
        t.add_row(*["" if v is None else str(v) for v in row])
    wide = None if sys.stdout.isatty() else 250  # do not fold values when piped
    out = Console(file=open(args.output, "w", encoding="utf-8"), width=250) if args.output else Console(width=wide)
    out.print(t)
    masked = doc.get("masked") or {}
    note = ", ".join(f"{p}: " + ", ".join(f"{c}={t}" for c, t in cols.items()) for p, cols in masked.items()) or "none"
    err.print(f"{doc['row_count']} row(s); products "
              f"{', '.join(f'{p} v{v}' for p, v in doc['versions'].items()) or '-'}; masked: {note}; "
              f"audit #{doc['audit_seq']}", highlight=False)
    return 0


def _verify(args) -> int:
    import json

    from govlake.sharing.service.client import ServiceError

    claims = []
    for text in args.claims:
        claim = {}
        for part in text.split(","):
            if "=" not in part:
                print(f"claim {text!r}: each part must be field=value", file=sys.stderr)
                return 2
            k, v = part.split("=", 1)
            claim[k.strip()] = v.strip()
        claims.append(claim)
    try:
        res = _client().post("/v1/verify", {"resource": args.resource, "purpose": args.purpose, "claims": claims})
    except ServiceError as exc:
        print(f"REFUSED ({exc.status}) {exc.problem.get('detail') or exc}", file=sys.stderr)
        return 3
    print(json.dumps(res, ensure_ascii=False, indent=2))
    return 0
