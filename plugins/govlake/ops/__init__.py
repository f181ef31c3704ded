"""Operations: feed freshness, 互联互通率, gate history, the ``department_connectivity`` product.

One duty per module:

``gate_history``  ``<lake>/_meta/gate_history.jsonl`` (``record_gate_result[s]``, ``gate_history``);
``lineage``       which product is built from which feed — the publication manifests' ``inputs``;
``quarantine``    row quarantine per transform run, and per feed of its latest batch;
``freshness``     feed state, freshness and 互联互通率: ``compute(lake, now)``;
``tasks``         the ``department_connectivity`` table and the ``ops_monitor`` task bodies.

Two neighbours live lower, because extraction uses them too: ``govlake.clock`` (the one clock:
``now()`` = the wall clock (UTC) or ``$GOVLAKE_NOW``) and ``govlake.landing`` (landing anomalies
extraction refused: symlinks, undeclared, non-date, future folders).

Everything is a function of the lake and ``now``; ``govlake status``, the ``ops_monitor`` DAG,
the dashboard and the alerts default ``now`` to ``clock.now()``, so they agree. Inputs: the
delivery ledger (``govlake.ledger``), the registered datasets (``govlake.metadata``), the row
quarantine ``<lake>/quarantine/rows/run_id=<id>/quarantine_rows.parquet``, the published
products' ``_manifest.json`` and the gate history. See docs/adr/0006-operations.md.

The names below are re-exported so ``from govlake import ops; ops.compute(...)`` keeps working.
"""

from __future__ import annotations

from govlake.clock import NOW_ENV, UTC, _iso, now, parse_ts, utcnow
from govlake.ops.freshness import (DEFAULT_GATE_RUNS, STATE_LABELS, STATES, Connectivity, DeptStatus, FeedStatus,
                                   _one_line, compute, freshness_reference)
from govlake.ops.gate_history import (GateRecord, gate_history, gate_history_path, latest_gates,
                                      record_gate_result, record_gate_results, staging_model)
from govlake.landing import LandingAnomaly, landing_anomalies
from govlake.ops.lineage import DESCRIBES_FEEDS, PRODUCT, Publish, product_lineage, publishes
from govlake.ops.quarantine import (DEFAULT_QUARANTINE_RUNS, QUARANTINE_FILE, BatchQuarantine, QuarantineRun,
                                    batch_quarantine, quarantine_history, quarantine_runs)
from govlake.ops.tasks import (CONNECTIVITY_SCHEMA, PARQUET_NAME, build_connectivity_parquet, build_connectivity_task,
                               candidate_path, connectivity_inputs, connectivity_table, now_from_context,
                               publish_connectivity_task)
from govlake.storage import Lake

__all__ = [
    "CONNECTIVITY_SCHEMA", "DEFAULT_GATE_RUNS", "DEFAULT_QUARANTINE_RUNS", "DESCRIBES_FEEDS", "NOW_ENV",
    "PARQUET_NAME", "PRODUCT", "QUARANTINE_FILE", "STATES", "STATE_LABELS", "UTC", "BatchQuarantine",
    "Connectivity", "DeptStatus", "FeedStatus", "GateRecord", "Lake", "LandingAnomaly", "Publish", "QuarantineRun",
    "batch_quarantine", "build_connectivity_parquet", "build_connectivity_task", "candidate_path",
    "compute", "connectivity_inputs", "connectivity_table", "freshness_reference",
    "gate_history", "gate_history_path", "landing_anomalies", "latest_gates", "now", "now_from_context", "parse_ts",
    "product_lineage", "publish_connectivity_task", "publishes", "quarantine_history", "quarantine_runs",
    "record_gate_result", "record_gate_results", "staging_model", "utcnow",
]
