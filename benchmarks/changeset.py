"""A next-day delivery of about 1 % new or changed rows, made from the previous delivery.

The generator writes whole deliveries (snapshot feeds: the full population again), so the
benchmark derives the change set itself, deterministically, from the rows of the previous
delivery as they were delivered (the raw Parquet keeps the delivered strings):

- snapshot feeds (household, social insurance, enterprise, tax): a **change file**
  ``<dataset>_<yyyymmdd>.delta.<ext>`` with 1 % of the rows (rows 1, 101, 201, ...: ceil(n/100)
  rows) with one descriptive column changed (address, name, registry office, tax
  authority); the key is unchanged, so the row replaces the earlier version of that key
  (``govlake_dedup``: the latest snapshot, then change files delivered after it, latest wins);
- incremental feeds (marriage, birth certificates): a normal next-day file with 1 % new rows
  (copies of earlier rows under a new certificate number).

A trivial day (``write_trivial_day``) is the same with one row of the household feed: what a day
costs whatever its size (the fixed part of the next day).

Files are written in the feed's format and encoding (GB18030 CSV, UTF-8 with BOM, JSON Lines).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb

from govlake import metadata
from govlake.storage import Lake

CHANGE = {  # the delivered column whose value changes, per feed
    "public_security.household_registration": "户籍地址",
    "human_resources.social_insurance": "aac003",
    "market_regulation.enterprise_registration": "住所",
    "tax.taxpayer_registration": "主管税务机关",
    "civil_affairs.marriage_registration": "证书编号",
    "health.birth_certificate": "出生医学证明编号",
}
EVERY = 100  # 1 %


def _rows(lake: Lake, ds: metadata.Dataset, date: str) -> tuple[list[str], list[tuple]]:
    cols = [c.name for c in ds.columns]
    sel = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
    con = duckdb.connect()
    rows = con.execute(
        f"select {sel} from read_parquet('{lake.raw_glob(ds.dept, ds.name)}', union_by_name=true) "
        f"where _delivery_date = ? and (_row_number - 1) % {EVERY} = 0 order by _batch_id, _row_number", [date]).fetchall()
    return cols, rows


TRIVIAL_FEED = "public_security.household_registration"  # a person feed: population_base changes too


def write_next_day(lake: Lake, date: str, next_date: str, *, only: str | None = None, limit: int | None = None) -> dict:
    """Write the change set for ``next_date`` into the landing zone; return rows per feed.
    ``only``/``limit``: one feed, its first ``limit`` rows of the change set (a trivial change)."""
    info = {}
    stamp = next_date.replace("-", "")
    for ds in metadata.datasets():
        if only and ds.id != only:
            continue
        cols, rows = _rows(lake, ds, date)
        rows = rows[:limit] if limit is not None else rows
        i = cols.index(CHANGE[ds.id])
        if ds.delivery == "snapshot":
            changed = [r[:i] + ((r[i] or "") + "（变更）",) + r[i + 1:] for r in rows]
            kind = "changed"
            name = f"{ds.name}_{stamp}.delta.{ds.format}"
        else:
            changed = [r[:i] + (f"N{stamp}-{k:08d}",) + r[i + 1:] for k, r in enumerate(rows)]
            kind = "new"
            name = f"{ds.name}_{stamp}.{ds.format}"
        folder = lake.landing(ds.dept, ds.name, next_date)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        enc = {"gb18030": "gb18030", "utf-8-sig": "utf-8-sig"}.get(ds.encoding, "utf-8")
        with open(path, "w", encoding=enc, newline="") as fh:
            if ds.format == "csv":
                w = csv.writer(fh, lineterminator="\r\n")
                w.writerow(cols)
                w.writerows(changed)
            else:
                for r in changed:
                    fh.write(json.dumps({c: v for c, v in zip(cols, r) if v is not None}, ensure_ascii=False) + "\n")
        info[ds.id] = {"file": str(path.relative_to(lake.landing_root)), "rows": len(changed), "kind": kind}
    return info


def write_trivial_day(lake: Lake, date: str, day: str) -> dict:
    """The fixed part of a day (issue 16): one changed row of the household feed (a change file
    with one row), so every stage has something to do and nothing proportional to the data."""
    return write_next_day(lake, date, day, only=TRIVIAL_FEED, limit=1)
