"""Row quarantine of the transform runs: ``<lake>/quarantine/rows/run_id=<id>/quarantine_rows.parquet``.

Transform runs are incremental (docs/adr/0008): a run's file holds the rejected rows of the
batches *that run* standardized, so a run without a new batch of a feed has no row of it.
Two views follow:

- per run (``quarantine_runs``, ``quarantine_history``, the trend): rows per feed and rule in
  each of the last runs — what each run rejected;
- per feed (``batch_quarantine``): the figures of the feed's latest batch, from whichever run
  standardized it (the latest run holding rows of that batch) — what the dashboard, the alerts
  and ``department_connectivity`` call the feed's quarantine rate.

A run's time is its earliest gate record (same run_id) if there is one, else the file's mtime.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from govlake.ledger import Delivery
from govlake.clock import UTC, _iso, parse_ts
from govlake.ops.gate_history import gate_history
from govlake.storage import Lake

QUARANTINE_FILE = "quarantine_rows.parquet"
DEFAULT_QUARANTINE_RUNS = 5
_RUN_DIR_RE = re.compile(r"^run_id=(.+)$")
_COLUMNS = ["dept", "dataset", "_batch_id", "_source_file", "_row_number", "rule"]


@dataclass
class QuarantineRun:
    run_id: str
    path: Path
    at: dt.datetime
    table: pa.Table


def run_files(lake: Lake, now: dt.datetime | None = None) -> list[tuple[dt.datetime, str, Path]]:
    """(time, run_id, file) of every transform run's quarantine file with time <= now, oldest first."""
    root = lake.quarantine_rows_root
    if not root.is_dir():
        return []
    first_gate: dict[str, dt.datetime] = {}
    for r in gate_history(lake):
        first_gate.setdefault(r.run_id, r.at)
    runs = []
    for d in root.iterdir():
        m = _RUN_DIR_RE.match(d.name)
        f = d / QUARANTINE_FILE
        if not (m and f.is_file()):
            continue
        run_id = m.group(1)
        at = first_gate.get(run_id) or dt.datetime.fromtimestamp(f.stat().st_mtime, UTC)
        if now is not None and at > now:
            continue
        runs.append((at, run_id, f))
    runs.sort()
    return runs


def _read(f: Path, run_id: str, filters=None) -> pa.Table:
    try:
        return pq.read_table(f, columns=_COLUMNS, filters=filters)
    except Exception as exc:  # noqa: BLE001 - name the file
        raise ValueError(f"{f}: cannot read row quarantine of run {run_id}: {exc}") from exc


def quarantine_runs(lake: Lake, last_n: int | None = DEFAULT_QUARANTINE_RUNS,
                    now: dt.datetime | None = None) -> list[QuarantineRun]:
    """The last ``last_n`` transform runs' quarantine files, oldest first (runs after ``now`` ignored)."""
    runs = run_files(lake, now)
    if last_n:
        runs = runs[-last_n:]
    return [QuarantineRun(run_id, f, at, _read(f, run_id)) for at, run_id, f in runs]


def _stats(table: pa.Table) -> dict[str, dict]:
    """feed id → {'rows': distinct quarantined rows, 'by_rule': {rule: rows}, 'by_batch': {batch: rows},
    'by_batch_rule': {batch: {rule: rows}}}."""
    stats: dict[str, dict] = {}
    seen: dict[str, set] = {}
    cols = table.to_pydict()
    for dept, dataset, batch, src, rown, rule in zip(cols["dept"], cols["dataset"], cols["_batch_id"],
                                                      cols["_source_file"], cols["_row_number"], cols["rule"]):
        fid = f"{dept}.{dataset}"
        s = stats.setdefault(fid, {"rows": 0, "by_rule": {}, "by_batch": {}, "by_batch_rule": {}})
        key = (batch, src, rown)
        rule_key = (key, rule)
        rs = seen.setdefault(fid, set())
        if rule_key not in rs:
            rs.add(rule_key)
            s["by_rule"][rule] = s["by_rule"].get(rule, 0) + 1
            br = s["by_batch_rule"].setdefault(batch, {})
            br[rule] = br.get(rule, 0) + 1
        if key not in rs:
            rs.add(key)
            s["rows"] += 1
            s["by_batch"][batch] = s["by_batch"].get(batch, 0) + 1
    return stats


def _quarantine_stats(run: QuarantineRun) -> dict[str, dict]:
    return _stats(run.table)


def quarantine_history(lake: Lake, last_n: int | None = DEFAULT_QUARANTINE_RUNS,
                       now: dt.datetime | None = None) -> list[dict]:
    """Quarantined rows per run, feed and rule (for charts): dicts with run_id, run_at, dept,
    dataset, rule, rows (a row failing two rules counts under both rules)."""
    out = []
    for run in quarantine_runs(lake, last_n, now):
        for fid, s in sorted(_quarantine_stats(run).items()):
            dept, dataset = fid.split(".", 1)
            for rule, n in sorted(s["by_rule"].items()):
                out.append({"run_id": run.run_id, "run_at": _iso(run.at), "dept": dept, "dataset": dataset,
                            "rule": rule, "rows": n})
    return out


@dataclass
class BatchQuarantine:
    """Quarantine figures of one batch. ``seen``: a run after the batch's arrival exists (a batch
    without a bad row leaves no trace in the quarantine files, so that is all we know of it);
    ``run_id``: the latest run holding rows of the batch (None when it had none)."""
    batch_id: str
    batch_rows: int | None
    seen: bool
    run_id: str | None = None
    run_at: dt.datetime | None = None
    rows: int = 0
    by_rule: dict = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if not self.seen or not self.batch_rows:
            return None
        return round(self.rows / self.batch_rows, 6)


def batch_quarantine(lake: Lake, batches: dict[str, Delivery],
                     now: dt.datetime | None = None) -> dict[str, BatchQuarantine]:
    """feed id → figures of ``batches[feed id]`` (each feed's latest batch), from whichever run
    standardized it: runs are read newest first (only the wanted batches' rows), and a run older
    than a batch's arrival cannot hold it, so the search stops there."""
    runs = run_files(lake, now)
    out: dict[str, BatchQuarantine] = {}
    arrival: dict[str, dt.datetime] = {}
    for fid, d in batches.items():
        at = parse_ts(d.ingested_at)
        arrival[fid] = at
        seen = any(run_at >= at for run_at, _, _ in runs) if at else bool(runs)
        out[fid] = BatchQuarantine(d.batch_id, d.rows, seen)
    wanted = {fid for fid in out if out[fid].seen}
    for run_at, run_id, f in reversed(runs):
        wanted = {fid for fid in wanted if arrival[fid] is None or run_at >= arrival[fid]}
        if not wanted:
            break
        ids = sorted({batches[fid].batch_id for fid in wanted})
        stats = _stats(_read(f, run_id, filters=[("_batch_id", "in", ids)]))
        for fid in list(wanted):
            s = stats.get(fid)
            b = out[fid]
            if s and s["by_batch"].get(b.batch_id):
                b.run_id, b.run_at = run_id, run_at
                b.rows = s["by_batch"][b.batch_id]
                b.by_rule = dict(sorted(s["by_batch_rule"][b.batch_id].items()))
                wanted.discard(fid)
    return out
