"""Feed freshness, feed state and 互联互通率: ``compute(lake, now)``.

One function for every view: ``govlake status``, the ``ops_monitor`` DAG (and so the
``department_connectivity`` product and the alerts) and the dashboard all call ``compute``, with
``now`` defaulting to ``govlake.clock.now()`` — the wall clock, or ``$GOVLAKE_NOW``.

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

``Connectivity.landing_anomalies``: the landing anomalies open at ``now`` (``govlake.landing``); any
makes the platform not ``healthy`` (``govlake status`` exits 1) without changing feed states.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

from govlake import metadata
from govlake.ledger import Delivery, Ledger
from govlake.clock import UTC, _iso, now as clock_now, parse_ts
from govlake.ops.gate_history import GateRecord, gate_history, latest_gates, staging_model
from govlake.landing import LandingAnomaly, landing_anomalies
from govlake.ops.lineage import product_lineage, publishes
from govlake.ops.quarantine import DEFAULT_QUARANTINE_RUNS, _quarantine_stats, batch_quarantine, quarantine_runs
from govlake.storage import Lake

STATES = ("on_time", "late", "failing", "never_delivered")
STATE_LABELS = {"on_time": "按时", "late": "逾期", "failing": "故障", "never_delivered": "从未交付"}
#: severity order used for a department's overall state (worst wins)
_SEVERITY = {"on_time": 0, "late": 1, "never_delivered": 2, "failing": 3}
DEFAULT_GATE_RUNS = 10


def freshness_reference(d: Delivery) -> dt.datetime:
    """min(end of the delivery day in UTC, ingested_at): see the module docstring."""
    ingested = parse_ts(d.ingested_at)
    day = dt.date.fromisoformat(d.delivery_date)
    end_of_day = dt.datetime(day.year, day.month, day.day, tzinfo=UTC) + dt.timedelta(days=1)
    return min(end_of_day, ingested) if ingested else end_of_day


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
    quarantine_batch_id: str | None = None  # the batch the quarantine figures are of (latest live batch)
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
    #: landing entries extraction refused (symlinks, undeclared/non-date/future folders), open at ``now``
    landing_anomalies: list[LandingAnomaly] = field(default_factory=list)

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
        return all(f.state == "on_time" for f in self.feeds) and not self.failing_gates and not self.landing_anomalies

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
            "landing_anomalies": [a.to_dict() for a in self.landing_anomalies],
        }


def compute(lake: Lake, now: dt.datetime | str | None = None, *,
            datasets: list[metadata.Dataset] | None = None,
            quarantine_runs_n: int = DEFAULT_QUARANTINE_RUNS,
            gate_runs_n: int = DEFAULT_GATE_RUNS) -> Connectivity:
    """Freshness, state, publish, quarantine and gate figures of every registered feed at ``now``
    (default: ``clock.now()``, the wall clock)."""
    now = clock_now(now)
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
    lineage = product_lineage(lake, pubs)
    qruns = quarantine_runs(lake, quarantine_runs_n, now)
    qstats = [(run, _quarantine_stats(run)) for run in qruns]
    # each feed's latest live batch, and its quarantine figures from the run that standardized it
    latest_batch: dict[str, Delivery] = {}
    for fid, dels in by_feed.items():
        live = [d for d in dels if d.status == "ingested" and not d.superseded_by]
        if live:
            latest_batch[fid] = max(live, key=lambda d: (parse_ts(d.ingested_at), d.delivery_date))
    bq = batch_quarantine(lake, latest_batch, now)

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

        # row quarantine: the feed's latest batch (whichever run standardized it), and a trend of
        # the rows each of the last runs rejected
        b = bq.get(ds.id)
        if b is not None:
            f.quarantine_batch_id, f.quarantine_run_id = b.batch_id, b.run_id
            f.quarantined_rows, f.quarantined_by_rule, f.quarantine_rate = b.rows, b.by_rule, b.rate
        f.quarantine_trend = [{"run_id": r.run_id, "run_at": _iso(r.at), "rows": st.get(ds.id, {}).get("rows", 0)}
                              for r, st in qstats]
        feeds.append(f)

    departments = []
    for dept in sorted({f.dept for f in feeds}):
        mine = [f for f in feeds if f.dept == dept]
        worst = max(mine, key=lambda f: _SEVERITY[f.state]).state
        departments.append(DeptStatus(dept, mine[0].department, worst, mine))

    failing = sorted((g for g in latest.values() if not g.success), key=lambda g: g.at)
    last_failed = max((g for g in gates if not g.success), key=lambda g: g.at, default=None)
    return Connectivity(now=now, feeds=feeds, departments=departments, failing_gates=failing,
                        last_failed_gate=last_failed, landing_anomalies=landing_anomalies(lake, now))


def _one_line(text: str | None, limit: int = 200) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


