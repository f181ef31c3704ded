"""Operations: feed freshness, 互联互通率, gate history, the ``department_connectivity`` product.

Everything here is a pure function of the lake and an explicit ``now`` (tests control the
clock); nothing reads the wall clock except the CLI/DAG defaults. Inputs:

- the delivery ledger (``govlake.ledger``) — what each department delivered and when;
- the registered datasets (``govlake.metadata``) — update cycle → ``late_after_hours``;
- row quarantine of the transform runs: ``<lake>/quarantine/rows/run_id=<id>/quarantine_rows.parquet``;
- published products (``Lake.products()`` + ``_manifest.json``);
- the gate history ``<lake>/_meta/gate_history.jsonl`` (written by ``record_gate_result``).

Feed state, worst first (see docs/adr/0006-operations.md):

``failing``          the most recent delivery was quarantined, or the most recent gate of the
                     feed's staging model (``stg_<dept>__<dataset>``) failed;
``never_delivered``  no delivery at all (as of ``now``);
``late``             the latest delivered data is older than the cycle's ``late_after_hours``;
``on_time``          otherwise.

The freshness reference of a delivery is ``min(end of its delivery_date (UTC), ingested_at)``:
data for day D counts as fresh until D+1 00:00 + the allowance, and a file that arrives
early (or is dated in the future) is measured from its arrival. Deliveries ingested after
``now`` are ignored (as-of semantics).

互联互通率 = departments whose every feed is ``on_time`` / registered departments.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from govlake import config, metadata
from govlake.ledger import Delivery, Ledger
from govlake.storage import Lake

UTC = dt.timezone.utc

STATES = ("on_time", "late", "failing", "never_delivered")
STATE_LABELS = {"on_time": "按时", "late": "逾期", "failing": "故障", "never_delivered": "从未交付"}
#: severity order used for a department's overall state (worst wins)
_SEVERITY = {"on_time": 0, "late": 1, "never_delivered": 2, "failing": 3}

PRODUCT = "department_connectivity"
PARQUET_NAME = f"{PRODUCT}.parquet"
QUARANTINE_FILE = "quarantine_rows.parquet"
DEFAULT_QUARANTINE_RUNS = 5
DEFAULT_GATE_RUNS = 10
_RUN_DIR_RE = re.compile(r"^run_id=(.+)$")


# ---- time helpers ---------------------------------------------------------------------------
def parse_ts(value: str | dt.datetime | dt.date | None) -> dt.datetime | None:
    """ISO timestamp/date → aware UTC datetime (naive values are taken as UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        d = value
    elif isinstance(value, dt.date):
        d = dt.datetime(value.year, value.month, value.day)
    else:
        s = str(value).strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        d = dt.datetime.fromisoformat(s)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def _iso(d: dt.datetime | None) -> str | None:
    return d.astimezone(UTC).isoformat() if d else None


def freshness_reference(d: Delivery) -> dt.datetime:
    """min(end of the delivery day in UTC, ingested_at): see the module docstring."""
    ingested = parse_ts(d.ingested_at)
    day = dt.date.fromisoformat(d.delivery_date)
    end_of_day = dt.datetime(day.year, day.month, day.day, tzinfo=UTC) + dt.timedelta(days=1)
    return min(end_of_day, ingested) if ingested else end_of_day


# ---- gate history ---------------------------------------------------------------------------
def gate_history_path(lake: Lake) -> Path:
    return lake.meta_root / "gate_history.jsonl"


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
                       dag_id: str | None = None, task_id: str | None = None) -> GateRecord:
    """Append one gate verdict to ``_meta/gate_history.jsonl`` (one JSON line, flushed + fsynced).

    ``failed`` holds one short description per failed expectation (e.g.
    ``FailedExpectation.describe()``)."""
    rec = GateRecord(run_id=str(run_id), layer=str(layer), model=str(model), suite=str(suite),
                     success=bool(success), failed=[str(f) for f in (failed or [])],
                     ts=_iso(parse_ts(ts) or utcnow()), dag_id=dag_id, task_id=task_id)
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


def dataset_of_model(model: str, datasets: Iterable[metadata.Dataset]) -> metadata.Dataset | None:
    """The feed a per-dataset model (``stg_/chk_/int_<dept>__<dataset>``) is built from, if any."""
    for ds in datasets:
        if model.endswith(f"_{ds.dept}__{ds.name}"):
            return ds
    return None


# ---- lineage: which published products are built from which feed ---------------------------
_REF_RE = re.compile(r"""ref\(\s*['"]([\w.]+)['"]\s*\)""")


def _models_sql(dbt_dir: Path) -> dict[str, str]:
    root = dbt_dir / "models"
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.sql"))} if root.is_dir() else {}


def product_lineage(products: Iterable[str], datasets: Iterable[metadata.Dataset],
                    dbt_dir: Path | None = None) -> dict[str, set[str]]:
    """product → set of feed ids (``dept.dataset``) it is built from.

    Static scan of the dbt SQL: ``ref('…')`` edges, and a model named ``…_<dept>__<dataset>``
    (or calling a macro with ``'<dept>', '<dataset>'``) reads that feed. A product without a
    dbt model (e.g. ``department_connectivity``) is built from no feed."""
    sql = _models_sql(dbt_dir or config.dbt_project_dir())
    dss = list(datasets)

    def direct(model: str) -> set[str]:
        text = sql.get(model, "")
        out = set()
        for ds in dss:
            if model.endswith(f"_{ds.dept}__{ds.name}") or re.search(
                    rf"""['"]{re.escape(ds.dept)}['"]\s*,\s*['"]{re.escape(ds.name)}['"]""", text):
                out.add(ds.id)
        return out

    memo: dict[str, set[str]] = {}

    def closure(model: str, seen: frozenset = frozenset()) -> set[str]:
        if model in memo:
            return memo[model]
        if model in seen or model not in sql:
            return set()
        out = direct(model)
        for parent in _REF_RE.findall(sql[model]):
            out |= closure(parent, seen | {model})
        memo[model] = out
        return out

    return {p: closure(p) for p in products}


@dataclass
class Publish:
    product: str
    version: int
    published_at: dt.datetime
    run_id: str | None


def publishes(lake: Lake, now: dt.datetime | None = None) -> dict[str, Publish]:
    """Latest published version per product with ``created_at <= now``."""
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
                out[product] = Publish(product, v, at, man.get("run_id"))
    return out


# ---- row quarantine -------------------------------------------------------------------------
@dataclass
class QuarantineRun:
    run_id: str
    path: Path
    at: dt.datetime
    table: pa.Table


def quarantine_runs(lake: Lake, last_n: int | None = DEFAULT_QUARANTINE_RUNS,
                    now: dt.datetime | None = None) -> list[QuarantineRun]:
    """The last ``last_n`` transform runs' quarantine files, oldest first.

    A run's time is its earliest gate record (same run_id) if there is one, else the file's
    mtime. Runs after ``now`` are ignored."""
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
    if last_n:
        runs = runs[-last_n:]
    out = []
    for at, run_id, f in runs:
        try:
            table = pq.read_table(f, columns=["dept", "dataset", "_batch_id", "_source_file", "_row_number", "rule"])
        except Exception as exc:  # noqa: BLE001 - name the file
            raise ValueError(f"{f}: cannot read row quarantine of run {run_id}: {exc}") from exc
        out.append(QuarantineRun(run_id, f, at, table))
    return out


def _quarantine_stats(run: QuarantineRun) -> dict[str, dict]:
    """feed id → {'rows': distinct quarantined rows, 'by_rule': {rule: rows}, 'by_batch': {batch: rows}}."""
    stats: dict[str, dict] = {}
    seen: dict[str, set] = {}
    cols = run.table.to_pydict()
    for dept, dataset, batch, src, rown, rule in zip(cols["dept"], cols["dataset"], cols["_batch_id"],
                                                      cols["_source_file"], cols["_row_number"], cols["rule"]):
        fid = f"{dept}.{dataset}"
        s = stats.setdefault(fid, {"rows": 0, "by_rule": {}, "by_batch": {}})
        key = (batch, src, rown)
        rule_key = (key, rule)
        rs = seen.setdefault(fid, set())
        if rule_key not in rs:
            rs.add(rule_key)
            s["by_rule"][rule] = s["by_rule"].get(rule, 0) + 1
        if key not in rs:
            rs.add(key)
            s["rows"] += 1
            s["by_batch"][batch] = s["by_batch"].get(batch, 0) + 1
    return stats


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


# ---- the computation ------------------------------------------------------------------------
@dataclass
class FeedStatus:
    dept: str
    department: str
    dataset: str
    title: str
    update_cycle: str
    late_after_hours: int
    state: str
    reason: str
    last_delivery_date: str | None = None
    last_ingested_at: dt.datetime | None = None
    last_batch_id: str | None = None
    last_delivery_status: str | None = None
    hours_since_delivery: float | None = None
    deliveries: int = 0
    quarantined_files: int = 0
    last_publish_product: str | None = None
    last_publish_version: int | None = None
    last_published_at: dt.datetime | None = None
    quarantine_run_id: str | None = None
    quarantined_rows: int = 0
    quarantined_by_rule: dict = field(default_factory=dict)
    quarantine_trend: list = field(default_factory=list)
    quarantine_rate: float | None = None
    gate_runs: int = 0
    gate_pass_rate: float | None = None
    failing_cause: str | None = None  # 'quarantined_delivery' | 'gate_failed' | None

    @property
    def id(self) -> str:
        return f"{self.dept}.{self.dataset}"

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]


@dataclass
class DeptStatus:
    dept: str
    department: str
    state: str
    feeds: list[FeedStatus]

    @property
    def on_time(self) -> bool:
        return all(f.state == "on_time" for f in self.feeds)

    @property
    def last_ingested_at(self) -> dt.datetime | None:
        return max((f.last_ingested_at for f in self.feeds if f.last_ingested_at), default=None)

    @property
    def last_delivery_date(self) -> str | None:
        return max((f.last_delivery_date for f in self.feeds if f.last_delivery_date), default=None)

    @property
    def last_publish(self) -> tuple[str, int, dt.datetime] | None:
        best = None
        for f in self.feeds:
            if f.last_published_at and (best is None or f.last_published_at > best[2]):
                best = (f.last_publish_product, f.last_publish_version, f.last_published_at)
        return best


@dataclass
class Connectivity:
    now: dt.datetime
    feeds: list[FeedStatus]
    departments: list[DeptStatus]
    failing_gates: list[GateRecord]  # (layer, model) whose latest gate failed
    last_failed_gate: GateRecord | None  # most recent failed gate record, resolved or not

    @property
    def registered_departments(self) -> int:
        return len(self.departments)

    @property
    def on_time_departments(self) -> int:
        return sum(1 for d in self.departments if d.on_time)

    @property
    def rate(self) -> float:
        """互联互通率 (0..1); 0 when no department is registered."""
        return self.on_time_departments / self.registered_departments if self.departments else 0.0

    @property
    def healthy(self) -> bool:
        return all(f.state == "on_time" for f in self.feeds) and not self.failing_gates

    def to_dict(self) -> dict:
        def feed(f: FeedStatus) -> dict:
            d = asdict(f)
            for k in ("last_ingested_at", "last_published_at"):
                d[k] = _iso(d[k])
            d["state_label"] = f.state_label
            return d

        return {
            "now": _iso(self.now),
            "connectivity_rate": self.rate,
            "on_time_departments": self.on_time_departments,
            "registered_departments": self.registered_departments,
            "healthy": self.healthy,
            "departments": [
                {"dept": d.dept, "department": d.department, "state": d.state,
                 "state_label": STATE_LABELS[d.state], "on_time": d.on_time,
                 "last_delivery_date": d.last_delivery_date, "last_ingested_at": _iso(d.last_ingested_at),
                 "last_publish": (None if d.last_publish is None else
                                  {"product": d.last_publish[0], "version": d.last_publish[1],
                                   "published_at": _iso(d.last_publish[2])}),
                 "feeds": [feed(f) for f in d.feeds]}
                for d in self.departments
            ],
            "failing_gates": [asdict(g) for g in self.failing_gates],
            "last_failed_gate": asdict(self.last_failed_gate) if self.last_failed_gate else None,
        }


def compute(lake: Lake, now: dt.datetime | str | None = None, *,
            datasets: list[metadata.Dataset] | None = None,
            quarantine_runs_n: int = DEFAULT_QUARANTINE_RUNS,
            gate_runs_n: int = DEFAULT_GATE_RUNS,
            dbt_dir: Path | None = None) -> Connectivity:
    """Freshness, state, publish, quarantine and gate figures of every registered feed at ``now``."""
    now = parse_ts(now) or utcnow()
    dss = list(datasets if datasets is not None else metadata.datasets())
    ledger = Ledger(lake)
    by_feed: dict[str, list[Delivery]] = {}
    for d in ledger.all():
        at = parse_ts(d.ingested_at)
        if at is not None and at > now:
            continue
        by_feed.setdefault(f"{d.dept}.{d.dataset}", []).append(d)

    gates = gate_history(lake, now)
    latest = latest_gates(gates)
    pubs = publishes(lake, now)
    lineage = product_lineage(pubs, dss, dbt_dir)
    qruns = quarantine_runs(lake, quarantine_runs_n, now)
    qstats = [(run, _quarantine_stats(run)) for run in qruns]

    feeds: list[FeedStatus] = []
    for ds in dss:
        f = FeedStatus(dept=ds.dept, department=ds.department, dataset=ds.name, title=ds.title,
                       update_cycle=ds.update_cycle, late_after_hours=ds.late_after_hours,
                       state="never_delivered", reason="no delivery recorded in the ledger")
        dels = by_feed.get(ds.id, [])
        f.deliveries = len(dels)
        f.quarantined_files = sum(1 for d in dels if d.status == "quarantined")
        latest_arrival = max(dels, key=lambda d: (parse_ts(d.ingested_at), d.delivery_date), default=None)
        # an unchanged snapshot delivered again ("duplicate") is a delivery on its date too
        ingested = [d for d in dels if d.status in ("ingested", "duplicate")]
        newest_data = max(ingested, key=lambda d: (d.delivery_date, parse_ts(d.ingested_at)), default=None)
        if latest_arrival is not None:
            f.last_delivery_status = latest_arrival.status
        if newest_data is not None:
            f.last_delivery_date = newest_data.delivery_date
            f.last_ingested_at = parse_ts(newest_data.ingested_at)
            f.last_batch_id = newest_data.batch_id
            ref = freshness_reference(newest_data)
            f.hours_since_delivery = round((now - ref).total_seconds() / 3600, 2)
        elif latest_arrival is not None:
            f.last_delivery_date = latest_arrival.delivery_date
            f.last_ingested_at = parse_ts(latest_arrival.ingested_at)
            f.last_batch_id = latest_arrival.batch_id

        # gate figures of the feed's staging model
        stg = staging_model(ds)
        mine = [g for g in gates if g.model == stg][-gate_runs_n:] if gate_runs_n else []
        f.gate_runs = len(mine)
        f.gate_pass_rate = (sum(1 for g in mine if g.success) / len(mine)) if mine else None
        last_gate = max((g for (layer, model), g in latest.items() if model == stg), key=lambda g: g.at,
                        default=None)

        # state
        if latest_arrival is not None and latest_arrival.status == "quarantined":
            f.state, f.failing_cause = "failing", "quarantined_delivery"
            f.reason = (f"latest delivery {latest_arrival.file_name} ({latest_arrival.delivery_date}) quarantined: "
                        f"{latest_arrival.reason or '?'} — {_one_line(latest_arrival.message)}")
        elif last_gate is not None and not last_gate.success:
            f.state, f.failing_cause = "failing", "gate_failed"
            f.reason = f"gate {last_gate.layer}/{last_gate.model} failed in run {last_gate.run_id}: {last_gate.reason}"
        elif newest_data is None:
            f.state, f.reason = "never_delivered", "no delivery recorded in the ledger"
        elif f.hours_since_delivery > ds.late_after_hours:
            f.state = "late"
            f.reason = (f"latest data {newest_data.delivery_date} is {f.hours_since_delivery:.1f} h old; "
                        f"{ds.update_cycle} feed allows {ds.late_after_hours} h")
        else:
            f.state = "on_time"
            f.reason = (f"latest data {newest_data.delivery_date}, {f.hours_since_delivery:.1f} h of "
                        f"{ds.late_after_hours} h allowed")

        # last publish of a product built from this feed
        best = None
        for product, feeds_of in lineage.items():
            if ds.id in feeds_of and product in pubs:
                p = pubs[product]
                if best is None or p.published_at > best.published_at:
                    best = p
        if best is not None:
            f.last_publish_product, f.last_publish_version, f.last_published_at = (
                best.product, best.version, best.published_at)

        # row quarantine: the latest run, and a trend over the last runs
        if qstats:
            run, stats = qstats[-1]
            s = stats.get(ds.id, {"rows": 0, "by_rule": {}, "by_batch": {}})
            f.quarantine_run_id = run.run_id
            f.quarantined_rows = s["rows"]
            f.quarantined_by_rule = dict(sorted(s["by_rule"].items()))
            f.quarantine_trend = [{"run_id": r.run_id, "run_at": _iso(r.at), "rows": st.get(ds.id, {}).get("rows", 0)}
                                  for r, st in qstats]
            # rate of the newest live batch, once a run has seen it
            live = [d for d in ingested if not d.superseded_by]
            newest_batch = max(live, key=lambda d: parse_ts(d.ingested_at), default=None)
            if newest_batch is not None and newest_batch.rows and parse_ts(newest_batch.ingested_at) <= run.at:
                f.quarantine_rate = round(s["by_batch"].get(newest_batch.batch_id, 0) / newest_batch.rows, 6)
        feeds.append(f)

    departments = []
    for dept in sorted({f.dept for f in feeds}):
        mine = [f for f in feeds if f.dept == dept]
        worst = max(mine, key=lambda f: _SEVERITY[f.state]).state
        departments.append(DeptStatus(dept, mine[0].department, worst, mine))

    failing = sorted((g for g in latest.values() if not g.success), key=lambda g: g.at)
    last_failed = max((g for g in gates if not g.success), key=lambda g: g.at, default=None)
    return Connectivity(now=now, feeds=feeds, departments=departments, failing_gates=failing,
                        last_failed_gate=last_failed)


def _one_line(text: str | None, limit: int = 200) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ---- the published product ------------------------------------------------------------------
CONNECTIVITY_SCHEMA = pa.schema([
    ("dept", pa.string()),
    ("department", pa.string()),
    ("dataset", pa.string()),
    ("title", pa.string()),
    ("update_cycle", pa.string()),
    ("late_after_hours", pa.int64()),
    ("state", pa.string()),
    ("state_label", pa.string()),
    ("reason", pa.string()),
    ("last_delivery_date", pa.string()),
    ("last_ingested_at", pa.timestamp("us", tz="UTC")),
    ("last_batch_id", pa.string()),
    ("last_delivery_status", pa.string()),
    ("hours_since_delivery", pa.float64()),
    ("deliveries", pa.int64()),
    ("quarantined_files", pa.int64()),
    ("last_publish_product", pa.string()),
    ("last_publish_version", pa.int64()),
    ("last_published_at", pa.timestamp("us", tz="UTC")),
    ("quarantine_run_id", pa.string()),
    ("quarantined_rows", pa.int64()),
    ("quarantined_by_rule", pa.string()),  # JSON object {rule: rows} of the latest run
    ("quarantine_trend", pa.string()),  # JSON list [{run_id, run_at, rows}] over the last runs
    ("quarantine_rate", pa.float64()),
    ("gate_runs", pa.int64()),
    ("gate_pass_rate", pa.float64()),
    ("dept_on_time", pa.bool_()),
    ("connectivity_rate", pa.float64()),
    ("on_time_departments", pa.int64()),
    ("registered_departments", pa.int64()),
    ("computed_at", pa.timestamp("us", tz="UTC")),
])


def connectivity_table(lake: Lake, now: dt.datetime | str | None = None, **kwargs) -> pa.Table:
    """One row per registered department × dataset (ASCII column names; see CONNECTIVITY_SCHEMA)."""
    c = compute(lake, now, **kwargs)
    on_time = {d.dept: d.on_time for d in c.departments}
    rows = []
    for f in c.feeds:
        rows.append({
            "dept": f.dept, "department": f.department, "dataset": f.dataset, "title": f.title,
            "update_cycle": f.update_cycle, "late_after_hours": f.late_after_hours,
            "state": f.state, "state_label": f.state_label, "reason": f.reason,
            "last_delivery_date": f.last_delivery_date, "last_ingested_at": f.last_ingested_at,
            "last_batch_id": f.last_batch_id, "last_delivery_status": f.last_delivery_status,
            "hours_since_delivery": f.hours_since_delivery, "deliveries": f.deliveries,
            "quarantined_files": f.quarantined_files,
            "last_publish_product": f.last_publish_product, "last_publish_version": f.last_publish_version,
            "last_published_at": f.last_published_at,
            "quarantine_run_id": f.quarantine_run_id, "quarantined_rows": f.quarantined_rows,
            "quarantined_by_rule": json.dumps(f.quarantined_by_rule, ensure_ascii=False, sort_keys=True),
            "quarantine_trend": json.dumps(f.quarantine_trend, ensure_ascii=False),
            "quarantine_rate": f.quarantine_rate, "gate_runs": f.gate_runs, "gate_pass_rate": f.gate_pass_rate,
            "dept_on_time": on_time[f.dept], "connectivity_rate": c.rate,
            "on_time_departments": c.on_time_departments, "registered_departments": c.registered_departments,
            "computed_at": c.now,
        })
    return pa.Table.from_pylist(rows, schema=CONNECTIVITY_SCHEMA)


def build_connectivity_parquet(lake: Lake, out_path: Path | str, now: dt.datetime | str | None = None,
                               **kwargs) -> Path:
    """Write ``department_connectivity`` to ``out_path`` atomically (tmp + fsync + rename)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = connectivity_table(lake, now, **kwargs)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out)
    return out


def candidate_path(lake: Lake, run_id: str) -> Path:
    """Where the ops DAG writes the candidate: ``candidate/<run_id>/department_connectivity.parquet``."""
    return lake.candidate(run_id) / PARQUET_NAME


def suite_path() -> Path:
    return config.expectations_dir() / "shared" / f"{PRODUCT}.json"


# ---- the ops_monitor DAG's task bodies ---------------------------------------------------------
def now_from_context(context: dict) -> dt.datetime:
    """The clock of an ops run: the later of the logical date and the data interval end, so
    ``dag.test(logical_date=...)`` controls it; wall clock when neither is set."""
    cands = [parse_ts(context.get(k)) for k in ("logical_date", "data_interval_end") if context.get(k)]
    return max(cands) if cands else utcnow()


def build_connectivity_task(lake: Lake, run_id: str, now: dt.datetime | str | None = None) -> dict:
    """Write the ``department_connectivity`` candidate for ``run_id``; returns a JSON-able summary."""
    c_now = parse_ts(now) or utcnow()
    out = build_connectivity_parquet(lake, candidate_path(lake, run_id), c_now)
    table = pq.read_table(out, columns=["dept", "state", "connectivity_rate", "on_time_departments",
                                        "registered_departments"])
    states: dict[str, int] = {}
    for s in table.column("state").to_pylist():
        states[s] = states.get(s, 0) + 1
    rate = table.column("connectivity_rate")[0].as_py() if table.num_rows else 0.0
    return {"run_id": run_id, "now": _iso(c_now), "candidate": str(out), "rows": table.num_rows,
            "states": states, "connectivity_rate": rate,
            "on_time_departments": table.column("on_time_departments")[0].as_py() if table.num_rows else 0,
            "registered_departments": table.column("registered_departments")[0].as_py() if table.num_rows else 0}


def connectivity_inputs(lake: Lake, now: dt.datetime | str | None = None) -> list[dict]:
    """The deliveries the product describes (newest live batch per feed), for the manifest's lineage."""
    now = parse_ts(now) or utcnow()
    newest: dict[str, Delivery] = {}
    for d in Ledger(lake).all():
        at = parse_ts(d.ingested_at)
        if d.status != "ingested" or d.superseded_by or (at and at > now):
            continue
        key = f"{d.dept}.{d.dataset}"
        if key not in newest or at >= parse_ts(newest[key].ingested_at):
            newest[key] = d
    return [{"dept": d.dept, "dataset": d.dataset, "batch_id": d.batch_id, "delivery_date": d.delivery_date,
             "file": d.file_name, "sha256": d.sha256} for _, d in sorted(newest.items())]


def publish_connectivity_task(lake: Lake, run_id: str, candidate: Path | str,
                              now: dt.datetime | str | None = None, *, dag_id: str = "ops_monitor",
                              task_id: str = "publish_connectivity") -> dict:
    """Gate the candidate with ``expectations/shared/department_connectivity.json``, record the
    verdict in the gate history, publish it (``govlake.publish.gate_and_publish``) and append
    the publication to the audit log. A failed gate is recorded, then ``GateFailed`` is raised."""
    from govlake import audit, gate, publish

    now = parse_ts(now) or utcnow()
    candidate = Path(candidate)
    g = gate.validate(lake, "shared", {PRODUCT: candidate}, run_id, today=now.date())
    record_gate_results(lake, g, ts=now, dag_id=dag_id, task_id=task_id)
    pub = publish.gate_and_publish(lake, PRODUCT, candidate, run_id=run_id,
                                   inputs=connectivity_inputs(lake, now), gate_result=g)
    audit.record_publication(lake, pub.record)
    from govlake import catalog

    catalog.build_site(lake)
    return {"product": PRODUCT, "version": int(pub), "path": pub.record["path"],
            "row_count": pub.record["row_count"], "report": str(g.report_path)}
