"""The offline catalog site under ``<lake>/catalog/``: the catalog pages (``catalog_pages``:
``index.html`` + ``catalog.json``) and the operations dashboard (``dashboard``), linked both ways.

A layer of its own above operations and sharing: it reads the catalog data
(:mod:`govlake.catalog`), the operations figures (:mod:`govlake.ops`) and the lake, and nothing
below imports it. Whoever publishes calls :func:`build_site` afterwards: the transform DAG's
``publish`` task, the ``ops_monitor`` DAG's ``publish_connectivity`` task and
``govlake catalog --build``.
"""

from __future__ import annotations

from pathlib import Path

from govlake.site import catalog_pages, dashboard
from govlake.storage import Lake


def build_site(lake: Lake | None = None) -> Path:
    """Regenerate the whole catalog site after a publication: catalog pages and the operations
    dashboard (linked both ways). Returns the catalog index."""
    lake = lake or Lake.default()
    index = catalog_pages.build(lake)
    dashboard.build(lake)
    return index


__all__ = ["build_site", "catalog_pages", "dashboard"]
