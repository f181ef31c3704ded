"""Test support for the ops and alerts tests: ledgers built with the real Ledger.record, row
quarantine files as the transform DAG writes them."""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq

from govlake import metadata, ops
from govlake.ledger import Delivery, Ledger


def deliver(lake, dept, dataset, date, ingested_at, *, status="ingested", rows=100, reason=None,
            message=None, name=None):
    name = name or f"{dataset}_{date}.csv"
    sha = hashlib.sha256(f"{dept}{dataset}{date}{ingested_at}{status}{name}".encode()).hexdigest()
    d = Delivery(batch_id=f"{date.replace('-', '')}-{sha[:16]}", dept=dept, dataset=dataset, delivery_date=date,
                 file_name=name, source_file=f"landing/{dept}/{dataset}/{date}/{name}", sha256=sha,
                 size_bytes=1000, rows=rows if status == "ingested" else None, status=status, encoding="utf-8",
                 reason=reason, message=message, supersedes=None, superseded_by=None,
                 ingested_at=ops.parse_ts(ingested_at).isoformat())
    Ledger(lake).record(d)
    return d


def all_on_time(lake, date="2026-11-24", ingested="2026-11-25T02:00:00+00:00"):
    for ds in metadata.datasets():
        deliver(lake, ds.dept, ds.name, date, ingested)


def write_quarantine(lake, run_id, rows, mtime=None):
    d = lake.quarantine_rows_root / f"run_id={run_id}"
    d.mkdir(parents=True, exist_ok=True)
    cols = ["dept", "dataset", "_batch_id", "_source_file", "_row_number", "rule", "column", "original_value",
            "message"]
    t = pa.table({c: [r.get(c) for r in rows] for c in cols},
                 schema=pa.schema([(c, pa.int64() if c == "_row_number" else pa.string()) for c in cols]))
    f = d / "quarantine_rows.parquet"
    pq.write_table(t, f)
    if mtime:
        ts = ops.parse_ts(mtime).timestamp()
        os.utime(f, (ts, ts))
    return f


def qrow(dept, dataset, batch, n, rule="id_number_checksum", column="身份证号"):
    return {"dept": dept, "dataset": dataset, "_batch_id": batch, "_source_file": "f.csv", "_row_number": n,
            "rule": rule, "column": column, "original_value": "x", "message": "bad"}
