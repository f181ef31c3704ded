"""The catalog's pages: ``<lake>/catalog/catalog.json`` and ``index.html`` (offline, inline CSS),
written from :func:`govlake.catalog.collect`. The operations dashboard beside them is
:mod:`govlake.site.dashboard`; :func:`govlake.site.build_site` writes both."""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from govlake.catalog import collect
from govlake.storage import Lake, atomic_write_text

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _env() -> Environment:
    return Environment(loader=FileSystemLoader(str(TEMPLATES)),
                       autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def render_html(data: dict) -> str:
    return _env().get_template("catalog.html").render(catalog=data)


def build(lake: Lake | None = None, dbt_dir: Path | None = None) -> Path:
    """Write catalog.json and index.html under ``lake.catalog_root``; returns index.html."""
    lake = lake or Lake.default()
    data = collect(lake, dbt_dir)
    lake.catalog_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(lake.catalog_json, json.dumps(data, ensure_ascii=False, indent=2, default=str))
    index = lake.catalog_index
    atomic_write_text(index, render_html(data))
    return index
