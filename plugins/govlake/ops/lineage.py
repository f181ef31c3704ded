"""Which published products are built from which feed: read from the publication manifests.

Every published version's ``_manifest.json`` lists its ``inputs`` — the batches it was built
from, each with ``dept``/``dataset``/``batch_id`` (``govlake.transform.publish_layer`` derives
them from dbt's own manifest, transitively). That is the lineage: no scan of the dbt SQL, which
missed ``ref()`` calls inside Jinja loops. The lineage of a product is that of its latest
published version (as of ``now``), so a version that stops reading a feed stops counting.

``department_connectivity`` lists every feed's newest batch as inputs because it *describes*
them; it is not built from their data, so it is nobody's "last publish" (``DESCRIBES_FEEDS``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from govlake.clock import UTC, parse_ts
from govlake.storage import Lake

#: the operations product (published by ops_monitor)
PRODUCT = "department_connectivity"
#: products whose manifest inputs describe feeds rather than feed them
DESCRIBES_FEEDS = frozenset({PRODUCT})


@dataclass
class Publish:
    product: str
    version: int
    published_at: dt.datetime
    run_id: str | None
    feeds: frozenset[str] = field(default_factory=frozenset)  # dept.dataset of the manifest's inputs


def manifest_feeds(lake: Lake, product: str, version: int, manifest: dict) -> frozenset[str]:
    """``dept.dataset`` of every entry of the manifest's ``inputs``; a malformed entry raises
    naming the manifest file and the entry."""
    inputs = manifest.get("inputs") or []
    path = lake.version_dir(product, version) / "_manifest.json"
    if not isinstance(inputs, list):
        raise ValueError(f"{path}: 'inputs' must be a list, got {type(inputs).__name__}")
    out = set()
    for i, entry in enumerate(inputs):
        if not (isinstance(entry, dict) and entry.get("dept") and entry.get("dataset")):
            raise ValueError(f"{path}: inputs[{i}] has no dept/dataset: {entry!r}")
        out.add(f"{entry['dept']}.{entry['dataset']}")
    return frozenset(out)


def publishes(lake: Lake, now: dt.datetime | None = None) -> dict[str, Publish]:
    """Latest published version per product with ``created_at <= now``, with its lineage."""
    out: dict[str, Publish] = {}
    for product in lake.products():
        for v in lake.versions(product):
            try:
                man = lake.manifest(product, v) or {}
            except (OSError, ValueError):
                man = {}
            at = parse_ts(man.get("created_at")) if man.get("created_at") else None
            if at is None:
                at = dt.datetime.fromtimestamp(lake.version_dir(product, v).stat().st_mtime, UTC)
            if now is not None and at > now:
                continue
            cur = out.get(product)
            if cur is None or (at, v) >= (cur.published_at, cur.version):
                out[product] = Publish(product, v, at, man.get("run_id"), manifest_feeds(lake, product, v, man))
    return out


def product_lineage(lake: Lake, pubs: dict[str, Publish] | None = None,
                    now: dt.datetime | None = None) -> dict[str, set[str]]:
    """product → feed ids (``dept.dataset``) its latest published version was built from."""
    pubs = publishes(lake, now) if pubs is None else pubs
    return {p: set(pub.feeds) for p, pub in pubs.items() if p not in DESCRIBES_FEEDS}
