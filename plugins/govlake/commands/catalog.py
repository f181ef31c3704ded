"""``govlake catalog``: the shared data catalog in the terminal (``--json``: catalog.json), and
``--build``: regenerate the catalog pages (``govlake.site.catalog_pages``)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("catalog", help="show the shared data catalog (共享目录)")
    c.add_argument("--build", action="store_true", help="regenerate catalog.json and the HTML site")
    c.add_argument("--json", action="store_true", help="print catalog.json to stdout")
    c.set_defaults(func=_catalog)


def _catalog(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from govlake import catalog, site
    from govlake.storage import Lake

    lake = Lake.default()
    if args.build:
        path = site.catalog_pages.build(lake)
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
