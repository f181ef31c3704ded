"""The shared data catalog (共享目录): ``<lake>/catalog/catalog.json`` and an offline HTML site.

Generated from the same metadata the pipeline uses (product YAML via :mod:`govlake.products`,
dataset metadata via :mod:`govlake.metadata`) and from the published versions' manifests.
Per product: the catalog fields of docs/standards.md §7 (名称, 代码, 提供方/责任部门, 摘要, 格式,
信息项 with grades, 共享类型/条件/方式, 更新周期, 发布日期), current and past versions, row
counts, the last gate result with a link to its Data Docs, freshness, and lineage from the
department deliveries to the product. The HTML has inline CSS and no external resource.

This module is the catalog's *data* (:func:`collect`, what ``catalog.json`` holds), read by
the sharing service (``GET /v1/catalog``) and ``govlake catalog``. The pages written from it
(``index.html``, ``catalog.json`` and the operations dashboard) are :mod:`govlake.site`, a layer
above operations; the pipeline's publish tasks rebuild the site after every publication, and
``govlake catalog --build`` does the same by hand.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from govlake import audit, metadata, products
from govlake.clock import parse_ts
from govlake.storage import Lake

SHARING_WAY = "受控查询接口 (govlake query：按角色授权、超出授权等级的信息项脱敏或令牌化、全程审计)"
FORMAT = "Parquet (按版本发布，不可变)"
CYCLE_CN = {"hourly": "每小时", "daily": "每日", "weekly": "每周", "monthly": "每月"}


def _parse_ts(value) -> dt.datetime | None:
    """A manifest's timestamp as ``clock.parse_ts`` reads it; None when absent or not ISO."""
    try:
        return parse_ts(value or None)
    except ValueError:
        return None


def _find_docs(gate) -> str | None:
    """The Data Docs path in a manifest's gate summary (key names vary by publisher)."""
    if isinstance(gate, dict):
        page = gate.get("docs_page")  # the suite's own Data Docs page, when the gate names one
        if isinstance(page, str) and page and Path(page).is_absolute():
            return page
        for k in ("docs_path", "data_docs", "data_docs_path", "docs", "report_path", "report"):
            v = gate.get(k)
            if isinstance(v, str) and v:
                return v
        for v in gate.values():
            found = _find_docs(v)
            if found:
                return found
    elif isinstance(gate, list):
        for v in gate:
            found = _find_docs(v)
            if found:
                return found
    return None


def _gate_passed(gate) -> bool | None:
    if not isinstance(gate, dict):
        return None
    for k in ("passed", "success", "ok"):
        if k in gate:
            return bool(gate[k])
    status = str(gate.get("status") or gate.get("result") or "").lower()
    if status:
        return status in ("passed", "pass", "success", "ok")
    return None


def _datasets_by_id() -> dict[str, metadata.Dataset]:
    try:
        return {d.id: d for d in metadata.datasets()}
    except Exception:  # metadata errors are reported by their own check
        return {}


def _lineage(inputs, ds: dict) -> list[dict]:
    out = []
    for item in inputs or []:
        if not isinstance(item, dict):
            out.append({"label": str(item)})
            continue
        dept = item.get("dept") or item.get("department") or ""
        name = item.get("dataset") or item.get("name") or ""
        if not name and "." in str(item.get("id", "")):
            dept, name = str(item["id"]).split(".", 1)
        d = ds.get(f"{dept}.{name}")
        out.append({
            "dept": dept, "dataset": name,
            "department": d.department if d else dept,
            "title": d.title if d else name,
            "owner": d.owner if d else "",
            "batch_id": item.get("batch_id") or item.get("batch") or "",
            "sha256": item.get("sha256") or item.get("source_sha256") or "",
            "delivered": item.get("delivered") or item.get("delivery_date") or item.get("date") or "",
            "file": item.get("file") or item.get("source_file") or "",
        })
    return out


def collect(lake: Lake | None = None, dbt_dir: Path | None = None,
            now: dt.datetime | None = None) -> dict:
    """The catalog as a dict (what catalog.json holds)."""
    lake = lake or Lake.default()
    now = now or dt.datetime.now(dt.timezone.utc)
    errors: list[str] = []
    try:
        meta = products.load(dbt_dir)
    except products.ProductMetadataError as exc:
        meta = {}
        errors.append(str(exc))
    ds = _datasets_by_id()
    names = sorted(set(meta) | set(lake.products()))
    out = []
    for name in names:
        pm = meta.get(name)
        cur = lake.current_version(name)
        man = lake.manifest(name) if cur is not None else None
        versions = []
        for v in sorted(lake.versions(name), reverse=True):
            try:
                m = lake.manifest(name, v) or {}
            except ValueError:
                m = {}
            versions.append({
                "version": v, "current": v == cur, "created_at": m.get("created_at"),
                "row_count": m.get("row_count"), "run_id": m.get("run_id"),
                "gate_passed": _gate_passed(m.get("gate") or m.get("gates")),
            })
        cols_types = {c.get("name"): c.get("type") for c in (man or {}).get("columns") or []
                      if isinstance(c, dict)}
        gate = (man or {}).get("gate") or (man or {}).get("gates")
        docs = _find_docs(gate)
        docs_href = None
        if docs:
            p = Path(docs)
            if not p.is_absolute():
                p = lake.root / p
            docs_href = os.path.relpath(p, lake.catalog_root)
        cycle = pm.update_cycle if pm else ""
        published = _parse_ts((man or {}).get("created_at"))
        late_after = metadata.UPDATE_CYCLES.get(cycle, (None, None))[1]
        age_h = round((now - published).total_seconds() / 3600, 1) if published else None
        if age_h is None:
            fresh = "unknown"
        elif late_after is None:
            fresh = "unknown"
        else:
            fresh = "fresh" if age_h <= late_after else "stale"
        warnings = []
        if pm is None:
            warnings.append("no product metadata (dbt YAML) for this published product")
        if cur is None:
            warnings.append("not published yet")
        out.append({
            "name": name,
            "title": pm.title if pm else name,
            "code": pm.code if pm else "",
            "owner_department": pm.owner_department if pm else "",
            "owner": pm.owner if pm else "",
            "summary": pm.summary if pm else "",
            "format": FORMAT,
            "grade": pm.grade if pm else "L4",
            "sharing": {
                "type": pm.sharing_type if pm else "",
                "condition": pm.sharing_condition if pm else "",
                "legal_basis": pm.legal_basis if pm else "",
                "way": SHARING_WAY,
            },
            "update_cycle": cycle,
            "update_cycle_cn": CYCLE_CN.get(cycle, cycle),
            "columns": [
                {"name": c.name, "description": c.description, "grade": c.grade,
                 "element": c.element, "data_type": cols_types.get(c.name) or c.data_type}
                for c in (pm.columns if pm else ())
            ],
            "current_version": cur,
            "published_at": (man or {}).get("created_at"),
            "row_count": (man or {}).get("row_count"),
            "run_id": (man or {}).get("run_id"),
            "versions": versions,
            "gate": {"passed": _gate_passed(gate), "summary": gate, "docs_path": docs,
                     "docs_href": docs_href},
            "freshness": {"status": fresh, "age_hours": age_h, "late_after_hours": late_after},
            "lineage": _lineage((man or {}).get("inputs"), ds),
            "warnings": warnings,
        })
    head = audit.head(lake)
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "products": out,
        "metadata_errors": errors,
        "audit_anchor": {"count": head.get("count"), "last_hash": head.get("last_hash")} if head else None,
    }
