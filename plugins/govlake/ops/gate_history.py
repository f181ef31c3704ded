"""The gate history ``<lake>/_meta/gate_history.jsonl``: one fsynced JSON line per model per gate
run (written by ``record_gate_result[s]``, read by freshness, alerts and quarantine timing)."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from govlake import metadata
from govlake.clock import _iso, parse_ts, utcnow
from govlake.storage import Lake


def gate_history_path(lake: Lake) -> Path:
    return lake.gate_history


@dataclass
class GateRecord:
    run_id: str
    layer: str
    model: str
    suite: str
    success: bool
    failed: list[str]
    ts: str
    dag_id: str | None = None
    task_id: str | None = None
    skipped: str | None = None  # the suite did not run: why the earlier verdict stands

    @property
    def at(self) -> dt.datetime:
        return parse_ts(self.ts)

    @property
    def reason(self) -> str:
        if self.success:
            return "passed"
        first = self.failed[0] if self.failed else "failed"
        more = f" (+{len(self.failed) - 1} more)" if len(self.failed) > 1 else ""
        return f"{first}{more}"


def record_gate_result(lake: Lake, *, run_id: str, layer: str, model: str, suite: str, success: bool,
                       failed: list[str], ts: str | dt.datetime | None = None,
                       dag_id: str | None = None, task_id: str | None = None,
                       skipped: str | None = None) -> GateRecord:
    """Append one gate verdict to ``_meta/gate_history.jsonl`` (one JSON line, flushed + fsynced).

    ``failed`` holds one short description per failed expectation (e.g.
    ``FailedExpectation.describe()``)."""
    rec = GateRecord(run_id=str(run_id), layer=str(layer), model=str(model), suite=str(suite),
                     success=bool(success), failed=[str(f) for f in (failed or [])],
                     ts=_iso(parse_ts(ts) or utcnow()), dag_id=dag_id, task_id=task_id, skipped=skipped)
    path = gate_history_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(rec), ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return rec


def record_gate_results(lake: Lake, result, *, ts: str | dt.datetime | None = None,
                        dag_id: str | None = None, task_id: str | None = None) -> list[GateRecord]:
    """Record every suite of a ``govlake.gate.GateResult`` (one line per model)."""
    out = []
    for model, r in result.suite_results.items():
        out.append(record_gate_result(
            lake, run_id=result.run_id, layer=result.layer, model=model, suite=r.suite,
            success=r.success, failed=[f.describe() for f in r.failed], ts=ts,
            dag_id=dag_id, task_id=task_id))
    return out


def gate_history(lake: Lake, now: dt.datetime | None = None) -> list[GateRecord]:
    """All gate records with ``ts <= now``, oldest first. A corrupt line raises naming file and line."""
    path = gate_history_path(lake)
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                rec = GateRecord(**doc)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path} line {i}: not a gate record: {exc}") from exc
            if now is None or rec.at <= now:
                out.append(rec)
    out.sort(key=lambda r: r.at)
    return out


def latest_gates(records: Iterable[GateRecord]) -> dict[tuple[str, str], GateRecord]:
    """Latest record per (layer, model)."""
    out: dict[tuple[str, str], GateRecord] = {}
    for r in records:
        cur = out.get((r.layer, r.model))
        if cur is None or r.at >= cur.at:
            out[(r.layer, r.model)] = r
    return out


def staging_model(ds: metadata.Dataset) -> str:
    return f"stg_{ds.dept}__{ds.name}"
