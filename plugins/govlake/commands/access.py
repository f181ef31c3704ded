"""Access subcommands: query (masked, audited), catalog, token-key."""

from __future__ import annotations

import argparse
import csv
import io
import sys


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="run one read-only SELECT on the granted products (masked, audited)")
    q.add_argument("--role", required=True, help="role from config/grants.yml")
    q.add_argument("--purpose", required=True, help="purpose of the query (one of the role's purposes)")
    q.add_argument("sql", help="one SELECT statement")
    q.add_argument("--format", choices=("table", "csv", "parquet"), default="table")
    q.add_argument("--output", default=None, help="write the result to this file (required for parquet)")
    q.add_argument("--limit", type=int, default=None, help="row limit (default 1000)")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds before the query is interrupted")
    q.set_defaults(func=_query)

    c = sub.add_parser("catalog", help="show the shared data catalog (共享目录)")
    c.add_argument("--build", action="store_true", help="regenerate catalog.json and the HTML site")
    c.add_argument("--json", action="store_true", help="print catalog.json to stdout")
    c.set_defaults(func=_catalog)

    k = sub.add_parser("token-key", help="create the local join-token key if none exists (never committed)")
    k.set_defaults(func=_token_key)


def _query(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from govlake import query

    err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)
    if args.format == "parquet" and not args.output:
        err.print("[red]--format parquet needs --output FILE[/red]")
        return 2
    try:
        res = query.run_query(args.role, args.purpose, args.sql, limit=args.limit, timeout=args.timeout)
    except query.QueryRefused as exc:
        err.print(f"[bold red]REFUSED[/bold red] {exc.what}: {exc.why}")
        return 3
    except query.QueryFailed as exc:
        err.print(f"[bold red]FAILED[/bold red] {exc}")
        return 4
    tbl = res.table
    if args.format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(tbl, args.output)
    elif args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(tbl.column_names)
        for row in tbl.to_pylist():
            w.writerow(["" if v is None else v for v in row.values()])
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as fh:
                fh.write(buf.getvalue())
        else:
            sys.stdout.write(buf.getvalue())
    else:
        t = Table(show_lines=False)
        for name in tbl.column_names:
            t.add_column(name, overflow="fold")
        for row in tbl.to_pylist():
            t.add_row(*["" if v is None else str(v) for v in row.values()])
        wide = None if sys.stdout.isatty() else 250  # do not fold values when piped
        out = Console(file=open(args.output, "w", encoding="utf-8"), width=250) if args.output else Console(width=wide)
        out.print(t)
    masked = {p: c for p, c in res.treatments.items() if c}
    note = ", ".join(f"{p}: " + ", ".join(f"{c}={t}" for c, t in cols.items())
                     for p, cols in masked.items()) or "none"
    err.print(f"{res.row_count} row(s){' (truncated at the row limit)' if res.truncated else ''}; "
              f"products {', '.join(f'{p} v{v}' for p, v in res.products.items()) or '-'}; "
              f"masked: {note}; audit #{res.audit_seq}", highlight=False)
    return 0


def _catalog(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from govlake import catalog
    from govlake.storage import Lake

    lake = Lake.default()
    if args.build:
        path = catalog.build(lake)
        print(f"catalog written: {path} and {path.with_name('catalog.json')}")
    data = catalog.collect(lake)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
        return 0
    con = Console(width=None if sys.stdout.isatty() else 200)
    t = Table(title="政务数据共享目录 (govlake catalog)")
    for col in ("产品", "名称", "责任部门", "共享类型", "分级", "当前版本", "记录数", "发布日期", "关口", "时效", "来源"):
        t.add_column(col, overflow="fold")
    for p in data["products"]:
        gate = {True: "通过", False: "未通过"}.get(p["gate"]["passed"], "—")
        src = ", ".join(sorted({f"{x.get('department')}" for x in p["lineage"]})) or "—"
        t.add_row(p["name"], p["title"], p["owner_department"], p["sharing"]["type"], p["grade"],
                  f"v{p['current_version']}" if p["current_version"] is not None else "未发布",
                  str(p["row_count"] if p["row_count"] is not None else "—"),
                  str(p["published_at"] or "—"), gate,
                  {"fresh": "及时", "stale": "逾期"}.get(p["freshness"]["status"], "—"), src)
    con.print(t)
    for e in data["metadata_errors"]:
        con.print(f"[red]metadata error:[/red] {e}")
    return 1 if data["metadata_errors"] else 0


def _token_key(args) -> int:
    from govlake import masking

    print(masking.ensure_local_key())
    return 0
