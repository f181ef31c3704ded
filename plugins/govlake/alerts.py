"""Alerts: a failed task, a failed gate, a late or failing feed, or a quarantine rate above the
threshold raises one alert through a pluggable notifier — once per open problem.

Problems live in a registry (SQLite, ``<lake>/_meta/alerts.sqlite``) keyed by what is wrong:

==================================  =====================================================
``task_failed:<dag_id>.<task_id>``  an Airflow task failed (``on_task_failure``); closed by
                                    ``on_task_success`` of the same task
``gate_failed:<layer>.<model>``     the latest gate of a model failed (gate history, or a
                                    task that raised ``GateFailed``); closed when it passes
``late_feed:<dept>.<dataset>``      the feed is late or was never delivered
``failing_feed:<dept>.<dataset>``   the feed's latest delivery was quarantined
``quarantine_rate:<dept>.<dataset>``  share of quarantined rows in the feed's latest batch (from
                                    the run that standardized it) > threshold
``landing_anomaly:<landing path>``  extraction refused a landing entry (a symlink, a folder of an
                                    undeclared department or dataset, a folder named not as a
                                    date or dated in the future: ``govlake.landing``);
                                    closed when a later extraction no longer finds it
==================================  =====================================================

``open`` on an already-open key only updates ``last_seen_at``: no second alert. ``evaluate``
closes every open problem of the kinds it checks that is no longer true (a resolution
notice is sent when ``notify_on_resolve``); the same problem recurring later opens — and
alerts — again. A notifier that fails leaves the problem marked un-notified; the next
``evaluate``/``open`` retries it.

Notifiers (``config/alerts.yml``, or ``$GOVLAKE_ALERTS_CONFIG``): ``jsonl`` (default,
``<lake>/_meta/alerts.jsonl``), ``webhook`` (HTTP POST of the JSON alert, urllib, timeout),
``email`` (smtplib), or any ``module:Class`` taking the entry's settings as keyword arguments
and offering ``send(alert: dict)``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import smtplib
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Iterable, Protocol

import yaml

from govlake import config, ops, sqlite_store
from govlake.storage import Lake

log = logging.getLogger(__name__)

KINDS = ("task_failed", "gate_failed", "late_feed", "failing_feed", "quarantine_rate", "landing_anomaly")
#: the kinds ``evaluate`` recomputes (and therefore may close); task failures close on success
EVALUATED_KINDS = ("gate_failed", "late_feed", "failing_feed", "quarantine_rate", "landing_anomaly")
TRANSFORM_DAG_ID = "transform_shared"

DEFAULT_CONFIG: dict[str, Any] = {
    "quarantine_rate_threshold": 0.05,
    "notify_on_resolve": True,
    "notifiers": [{"type": "jsonl"}],
}


# ---- configuration ---------------------------------------------------------------------------
def config_path() -> Path:
    env = os.environ.get("GOVLAKE_ALERTS_CONFIG")
    return Path(env) if env else config.project_root() / "config" / "alerts.yml"


def load_config(path: Path | str | None = None) -> dict:
    """The alert settings (defaults for missing keys). Errors name the file and the key."""
    p = Path(path) if path else config_path()
    doc: dict = {}
    if p.is_file():
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"{p}: expected a mapping at top level")
    cfg = {**DEFAULT_CONFIG, **doc}
    try:
        cfg["quarantine_rate_threshold"] = float(cfg["quarantine_rate_threshold"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: quarantine_rate_threshold must be a number, got "
                         f"{cfg['quarantine_rate_threshold']!r}") from exc
    if not 0 <= cfg["quarantine_rate_threshold"] <= 1:
        raise ValueError(f"{p}: quarantine_rate_threshold must be between 0 and 1")
    if not isinstance(cfg.get("notifiers"), list) or not cfg["notifiers"]:
        raise ValueError(f"{p}: notifiers must be a non-empty list")
    for i, n in enumerate(cfg["notifiers"]):
        if not isinstance(n, dict) or not n.get("type"):
            raise ValueError(f"{p}: notifiers[{i}] needs a 'type' (jsonl, webhook, email or module:Class)")
    cfg["_path"] = str(p)
    return cfg


# ---- notifiers -------------------------------------------------------------------------------
class Notifier(Protocol):
    def send(self, alert: dict) -> None: ...


class JsonlNotifier:
    """Appends each alert as one JSON line (default ``<lake>/_meta/alerts.jsonl``)."""

    def __init__(self, lake: Lake, path: str | None = None, **_: Any):
        self.path = Path(path) if path else alerts_log_path(lake)

    def send(self, alert: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(alert, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


class WebhookNotifier:
    """POSTs the alert as JSON (UTF-8) to ``url``; any non-2xx answer or timeout raises."""

    def __init__(self, lake: Lake | None = None, url: str = "", timeout_seconds: float = 5.0,
                 headers: dict | None = None, **_: Any):
        if not url:
            raise ValueError("webhook notifier needs a url")
        self.url, self.timeout, self.headers = url, float(timeout_seconds), dict(headers or {})

    def send(self, alert: dict) -> None:
        body = json.dumps(alert, ensure_ascii=False).encode("utf-8")
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8",
                                              "User-Agent": "govlake-alerts", **self.headers})
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"webhook {self.url} answered HTTP {resp.status}")


class EmailNotifier:
    """Sends the alert by SMTP. The password comes from the environment variable named by
    ``password_env`` (never from the YAML)."""

    def __init__(self, lake: Lake | None = None, host: str = "localhost", port: int = 25,
                 sender: str = "govlake@localhost", to: list[str] | str = (), starttls: bool = False,
                 username: str | None = None, password_env: str | None = None,
                 timeout_seconds: float = 10.0, **_: Any):
        self.host, self.port, self.sender = host, int(port), sender
        self.to = [to] if isinstance(to, str) else list(to)
        if not self.to:
            raise ValueError("email notifier needs at least one recipient ('to')")
        self.starttls, self.username, self.password_env = bool(starttls), username, password_env
        self.timeout = float(timeout_seconds)

    def message(self, alert: dict) -> EmailMessage:
        msg = EmailMessage()
        what = "resolved" if alert.get("event") == "resolved" else "ALERT"
        msg["Subject"] = f"[govlake {what}] {alert.get('kind')} {alert.get('dataset') or alert.get('dag_id')}: " \
                         f"{alert.get('reason', '')}"[:200]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg.set_content(json.dumps(alert, ensure_ascii=False, indent=2))
        return msg

    def send(self, alert: dict) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, os.environ.get(self.password_env or "", ""))
            smtp.send_message(self.message(alert))


_BUILTIN = {"jsonl": JsonlNotifier, "webhook": WebhookNotifier, "email": EmailNotifier}


def make_notifiers(lake: Lake, cfg: dict) -> list[Notifier]:
    out = []
    for entry in cfg["notifiers"]:
        kind = entry["type"]
        kwargs = {k: v for k, v in entry.items() if k != "type"}
        if kind in _BUILTIN:
            cls = _BUILTIN[kind]
        elif ":" in kind:
            mod, _, name = kind.partition(":")
            cls = getattr(importlib.import_module(mod), name)
        else:
            raise ValueError(f"{cfg.get('_path')}: unknown notifier type {kind!r}")
        out.append(cls(lake=lake, **kwargs))
    return out


# ---- the open-problem registry ---------------------------------------------------------------
def alerts_log_path(lake: Lake) -> Path:
    return lake.alerts_log


def registry_path(lake: Lake) -> Path:
    return lake.alerts_db


_SCHEMA = """
create table if not exists problems (
    key          text primary key,
    kind         text not null,
    dag_id       text,
    task_id      text,
    dataset      text,
    reason       text not null,
    opened_at    text not null,
    last_seen_at text not null,
    closed_at    text,
    status       text not null check (status in ('open', 'closed')),
    notified     integer not null default 0,
    notify_error text,
    times_opened integer not null default 1
);
"""


@dataclass
class Problem:
    key: str
    kind: str
    dag_id: str | None
    task_id: str | None
    dataset: str | None
    reason: str

    def alert(self, event: str, opened_at: str, at: str) -> dict:
        return {"event": event, "key": self.key, "kind": self.kind, "dag_id": self.dag_id,
                "task_id": self.task_id, "dataset": self.dataset, "reason": self.reason,
                "opened_at": opened_at, **({"closed_at": at} if event == "resolved" else {})}


class Registry:
    def __init__(self, lake: Lake, cfg: dict | None = None, notifiers: list[Notifier] | None = None):
        self.lake = lake
        self.cfg = cfg if cfg is not None else load_config()
        self.notifiers = notifiers if notifiers is not None else make_notifiers(lake, self.cfg)
        lake.meta_root.mkdir(parents=True, exist_ok=True)
        self.path = registry_path(lake)
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self):
        return sqlite_store.connect(self.path, timeout=60)

    def _notify(self, alert: dict) -> str | None:
        errors = []
        for n in self.notifiers:
            try:
                n.send(alert)
            except Exception as exc:  # noqa: BLE001 - one broken notifier must not stop the rest
                errors.append(f"{type(n).__name__}: {type(exc).__name__}: {exc}")
                log.warning("alert notifier %s failed for %s: %s", type(n).__name__, alert["key"], exc)
        return "; ".join(errors) or None

    def open(self, p: Problem, now: dt.datetime | None = None) -> dict | None:
        """Open (and notify) ``p`` unless it is already open. Returns the alert sent, or None."""
        at = ops._iso(ops.now(now))
        with self._conn() as c:
            c.execute("begin immediate")
            row = c.execute("select * from problems where key=?", (p.key,)).fetchone()
            if row is not None and row["status"] == "open":
                c.execute("update problems set last_seen_at=? where key=?", (at, p.key))
                c.execute("commit")
                if row["notified"]:
                    return None
                alert = p.alert("opened", row["opened_at"], at)  # retry a failed notification
            else:
                if row is None:
                    c.execute("insert into problems (key, kind, dag_id, task_id, dataset, reason, opened_at, "
                              "last_seen_at, status) values (?,?,?,?,?,?,?,?, 'open')",
                              (p.key, p.kind, p.dag_id, p.task_id, p.dataset, p.reason, at, at))
                else:
                    c.execute("update problems set kind=?, dag_id=?, task_id=?, dataset=?, reason=?, opened_at=?, "
                              "last_seen_at=?, closed_at=null, status='open', notified=0, notify_error=null, "
                              "times_opened=times_opened+1 where key=?",
                              (p.kind, p.dag_id, p.task_id, p.dataset, p.reason, at, at, p.key))
                c.execute("commit")
                alert = p.alert("opened", at, at)
        err = self._notify(alert)
        with self._conn() as c:
            c.execute("update problems set notified=?, notify_error=? where key=?", (0 if err else 1, err, p.key))
        return alert

    def close(self, key: str, now: dt.datetime | None = None) -> dict | None:
        """Close an open problem; returns the resolution notice (sent if ``notify_on_resolve``)."""
        at = ops._iso(ops.now(now))
        with self._conn() as c:
            c.execute("begin immediate")
            row = c.execute("select * from problems where key=? and status='open'", (key,)).fetchone()
            if row is None:
                c.execute("commit")
                return None
            c.execute("update problems set status='closed', closed_at=? where key=?", (at, key))
            c.execute("commit")
        p = Problem(row["key"], row["kind"], row["dag_id"], row["task_id"], row["dataset"], row["reason"])
        notice = p.alert("resolved", row["opened_at"], at)
        if self.cfg.get("notify_on_resolve", True):
            self._notify(notice)
        return notice

    def problems(self, status: str | None = "open") -> list[dict]:
        with self._conn() as c:
            q = "select * from problems" + (" where status=?" if status else "") + " order by opened_at, key"
            return [dict(r) for r in c.execute(q, (status,) if status else ())]

    def sync(self, current: Iterable[Problem], kinds: Iterable[str], now: dt.datetime | None = None
             ) -> dict[str, list[dict]]:
        """Open every problem in ``current``; close open problems of ``kinds`` not in it."""
        current = list(current)
        kinds = set(kinds)
        keys = {p.key for p in current}
        opened = [a for a in (self.open(p, now) for p in current) if a]
        closed = []
        for row in self.problems("open"):
            if row["kind"] in kinds and row["key"] not in keys:
                notice = self.close(row["key"], now)
                if notice:
                    closed.append(notice)
        return {"opened": opened, "closed": closed}


# ---- what is wrong now -----------------------------------------------------------------------
def current_problems(lake: Lake, now: dt.datetime | str | None = None, cfg: dict | None = None,
                     connectivity: ops.Connectivity | None = None) -> list[Problem]:
    """Late/never-delivered and failing feeds, failed gates, quarantine rates over the threshold,
    landing anomalies (one problem per landing path)."""
    cfg = cfg if cfg is not None else load_config()
    c = connectivity or ops.compute(lake, now)
    threshold = cfg["quarantine_rate_threshold"]
    out: list[Problem] = []
    for f in c.feeds:
        extract = (f"extract_{f.dept}", f"extract_{f.dataset}")
        if f.state in ("late", "never_delivered"):
            out.append(Problem(f"late_feed:{f.id}", "late_feed", *extract, f.id,
                               f"{f.department} {f.title}: {f.reason}"))
        if f.state == "failing" and f.failing_cause == "quarantined_delivery":
            out.append(Problem(f"failing_feed:{f.id}", "failing_feed", *extract, f.id,
                               f"{f.department} {f.title}: {f.reason}"))
        if f.quarantine_rate is not None and f.quarantine_rate > threshold:
            out.append(Problem(f"quarantine_rate:{f.id}", "quarantine_rate", TRANSFORM_DAG_ID, None, f.id,
                               f"{f.department} {f.title}: {f.quarantine_rate:.1%} of batch {f.quarantine_batch_id} "
                               f"quarantined in run {f.quarantine_run_id} (threshold {threshold:.1%}); "
                               f"rules {f.quarantined_by_rule}"))
    for g in c.failing_gates:
        feed = next((f.id for f in c.feeds if g.model.endswith(f"_{f.dept}__{f.dataset}")), None)
        out.append(gate_problem(g.layer, g.model, f"gate {g.layer}/{g.model} (suite {g.suite}) failed in run "
                                                  f"{g.run_id}: {g.reason}",
                                dag_id=g.dag_id, task_id=g.task_id, dataset=feed or g.model))
    for a in c.landing_anomalies:
        out.append(landing_problem(a))
    return out


def landing_problem(a: ops.LandingAnomaly) -> Problem:
    """The alert of a landing anomaly: keyed by its path, on the extraction DAG of its department."""
    in_dataset = bool(a.scope)  # inside a declared dataset's folder: its extract task found it
    in_dept = in_dataset or "/" in a.path  # inside a declared department's folder
    dag_id = f"extract_{a.dept}" if in_dept and a.dept else None
    task_id = f"extract_{a.dataset}" if in_dataset else None
    return Problem(f"landing_anomaly:{a.path}", "landing_anomaly", dag_id, task_id, a.feed or f"landing/{a.path}",
                   ops._one_line(a.message, 300))


def gate_problem(layer: str, model: str, reason: str, *, dag_id: str | None = None, task_id: str | None = None,
                 dataset: str | None = None) -> Problem:
    return Problem(f"gate_failed:{layer}.{model}", "gate_failed", dag_id or TRANSFORM_DAG_ID, task_id,
                   dataset or model, reason)


def evaluate(lake: Lake | None = None, now: dt.datetime | str | None = None, *, cfg: dict | None = None,
             notifiers: list[Notifier] | None = None) -> dict:
    """Open alerts for what is wrong at ``now`` and close what was resolved. Returns a summary
    ``{'now', 'open': [keys], 'opened': [alerts], 'closed': [notices]}`` (called by ops_monitor)."""
    lake = lake or Lake.default()
    now = ops.now(now)  # the wall clock (or $GOVLAKE_NOW) unless given: same clock as status
    cfg = cfg if cfg is not None else load_config()
    reg = Registry(lake, cfg, notifiers)
    res = reg.sync(current_problems(lake, now, cfg), EVALUATED_KINDS, now)
    return {"now": ops._iso(now), "open": [r["key"] for r in reg.problems("open")], **res}


# ---- Airflow callbacks -----------------------------------------------------------------------
def _ctx_ids(context: dict) -> tuple[str | None, str | None]:
    ti = context.get("task_instance") or context.get("ti")
    dag = context.get("dag")
    task = context.get("task")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None)
    task_id = getattr(ti, "task_id", None) or getattr(task, "task_id", None)
    return dag_id, task_id


def _dataset_for_task(dag_id: str | None, task_id: str | None) -> str | None:
    if dag_id and task_id and dag_id.startswith("extract_") and task_id.startswith("extract_"):
        return f"{dag_id.removeprefix('extract_')}.{task_id.removeprefix('extract_')}"
    return None


def problems_for_failure(context: dict) -> list[Problem]:
    """The problems a failed task stands for: one per failed gate model when the task raised
    ``govlake.gate.GateFailed`` (same key as the gate history), otherwise the task itself."""
    dag_id, task_id = _ctx_ids(context)
    exc = context.get("exception")
    result = getattr(exc, "result", None)
    if exc is not None and type(exc).__name__ == "GateFailed" and result is not None:
        out = []
        for model, r in result.suite_results.items():
            if r.success:
                continue
            first = r.failed[0].describe() if r.failed else "failed"
            more = f" (+{len(r.failed) - 1} more)" if len(r.failed) > 1 else ""
            out.append(gate_problem(result.layer, model,
                                    f"gate {result.layer}/{model} (suite {r.suite}) failed in run "
                                    f"{result.run_id}: {first}{more}", dag_id=dag_id, task_id=task_id))
        if out:
            return out
    if exc is None:
        why = "task failed (no exception in context)"
    else:
        text = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    why = ops._one_line(why, 300)
    return [Problem(f"task_failed:{dag_id}.{task_id}", "task_failed", dag_id, task_id,
                    _dataset_for_task(dag_id, task_id), f"{dag_id}.{task_id} failed: {why}")]


def on_task_failure(context: dict, lake: Lake | None = None) -> list[dict]:
    """Airflow ``on_failure_callback``: open (and notify) the problem. Never raises."""
    try:
        reg = Registry(lake or Lake.default())
        return [a for a in (reg.open(p) for p in problems_for_failure(context)) if a]
    except Exception:  # noqa: BLE001 - a callback must not mask the task's own failure
        log.exception("govlake alert callback failed")
        return []


def on_task_success(context: dict, lake: Lake | None = None) -> dict | None:
    """Airflow ``on_success_callback``: close the task's ``task_failed`` problem if open."""
    try:
        dag_id, task_id = _ctx_ids(context)
        return Registry(lake or Lake.default()).close(f"task_failed:{dag_id}.{task_id}")
    except Exception:  # noqa: BLE001
        log.exception("govlake alert callback failed")
        return None


def read_alerts(lake: Lake) -> list[dict]:
    """The alerts written by the default JSON Lines sink."""
    p = alerts_log_path(lake)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


__all__ = ["DEFAULT_CONFIG", "EmailNotifier", "JsonlNotifier", "Problem", "Registry", "WebhookNotifier",
           "current_problems", "evaluate", "load_config", "make_notifiers", "on_task_failure",
           "on_task_success", "read_alerts"]
