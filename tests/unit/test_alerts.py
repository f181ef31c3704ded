"""Alerts: once per open problem, closed when resolved, alert again on recurrence; notifiers."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socketserver
import threading
from types import SimpleNamespace

import pytest
from ops_support import all_on_time, deliver, qrow, write_quarantine

from govlake import alerts, metadata, ops

CFG = {"quarantine_rate_threshold": 0.05, "notify_on_resolve": True, "notifiers": [{"type": "jsonl"}]}


def keys(lake, event="opened"):
    return [a["key"] for a in alerts.read_alerts(lake) if a["event"] == event]


def test_late_feed_alerts_once_closes_and_reopens(lake):
    all_on_time(lake)
    assert alerts.evaluate(lake, "2026-11-25T12:00:00Z", cfg=CFG)["open"] == []
    assert alerts.read_alerts(lake) == []

    # two days on: every daily feed is late (tax is weekly)
    res = alerts.evaluate(lake, "2026-11-27T12:00:00Z", cfg=CFG)
    daily = sorted(f"late_feed:{d.id}" for d in metadata.datasets() if d.update_cycle == "daily")
    assert sorted(a["key"] for a in res["opened"]) == daily
    a = next(a for a in alerts.read_alerts(lake) if a["key"] == "late_feed:public_security.household_registration")
    assert a["dag_id"] == "extract_public_security" and a["task_id"] == "extract_household_registration"
    assert a["dataset"] == "public_security.household_registration"
    assert "公安" in a["reason"] and "36 h" in a["reason"] and "\n" not in a["reason"]
    assert a["opened_at"].startswith("2026-11-27T12:00")

    # the same open problems an hour later: no second alert
    res = alerts.evaluate(lake, "2026-11-27T13:00:00Z", cfg=CFG)
    assert res["opened"] == [] and sorted(res["open"]) == daily
    assert sorted(keys(lake)) == daily

    # public security delivers: its problem is closed, the others stay open
    deliver(lake, "public_security", "household_registration", "2026-11-27", "2026-11-27T14:00:00Z")
    res = alerts.evaluate(lake, "2026-11-27T15:00:00Z", cfg=CFG)
    assert [n["key"] for n in res["closed"]] == ["late_feed:public_security.household_registration"]
    assert keys(lake, "resolved") == ["late_feed:public_security.household_registration"]
    assert "late_feed:public_security.household_registration" not in res["open"]
    assert res["opened"] == []

    # it goes stale again: a new alert for the recurrence
    res = alerts.evaluate(lake, "2026-11-30T00:00:00Z", cfg=CFG)
    assert "late_feed:public_security.household_registration" in [a["key"] for a in res["opened"]]
    assert keys(lake).count("late_feed:public_security.household_registration") == 2
    reg = alerts.Registry(lake, CFG)
    row = next(r for r in reg.problems() if r["key"] == "late_feed:public_security.household_registration")
    assert row["times_opened"] == 2 and row["status"] == "open" and row["notified"] == 1


def test_quarantine_rate_and_failing_feed(lake):
    all_on_time(lake)
    from govlake.ledger import Ledger

    batch = Ledger(lake).all("health")[0].batch_id
    # 4 of 100 rows: under the 5 % threshold
    write_quarantine(lake, "run1", [qrow("health", "birth_certificate", batch, n) for n in range(4)],
                     mtime="2026-11-25T03:00:00Z")
    assert alerts.evaluate(lake, "2026-11-25T04:00:00Z", cfg=CFG)["opened"] == []
    # 6 of 100: over it
    write_quarantine(lake, "run2", [qrow("health", "birth_certificate", batch, n) for n in range(6)],
                     mtime="2026-11-25T05:00:00Z")
    res = alerts.evaluate(lake, "2026-11-25T06:00:00Z", cfg=CFG)
    assert [a["key"] for a in res["opened"]] == ["quarantine_rate:health.birth_certificate"]
    assert "6.0%" in res["opened"][0]["reason"] and "id_number_checksum" in res["opened"][0]["reason"]
    # a stricter config would have alerted on run1's figure too: the threshold is honoured
    assert alerts.current_problems(lake, "2026-11-25T04:00:00Z",
                                   {**CFG, "quarantine_rate_threshold": 0.03})[0].kind == "quarantine_rate"

    deliver(lake, "tax", "taxpayer_registration", "2026-11-25", "2026-11-25T07:00:00Z", status="quarantined",
            reason="contract", message="missing column 纳税人识别号")
    res = alerts.evaluate(lake, "2026-11-25T08:00:00Z", cfg=CFG)
    assert [a["key"] for a in res["opened"]] == ["failing_feed:tax.taxpayer_registration"]
    assert "纳税人识别号" in res["opened"][0]["reason"]


def _gate_failed(model="stg_tax__taxpayer_registration"):
    from govlake.gate import FailedExpectation, GateFailed, GateResult, SuiteResult

    fe = FailedExpectation(type="expect_column_values_to_not_be_null", column="uscc", kwargs={"column": "uscc"},
                           unexpected_count=3)
    sr = SuiteResult(model=model, suite=f"standardized.{model}", success=False, evaluated=10, failed=[fe],
                     table="x.parquet")
    ok = SuiteResult(model="stg_health__birth_certificate", suite="s", success=True, evaluated=3, failed=[],
                     table="y.parquet")
    res = GateResult(layer="standardized", run_id="run-7", success=False,
                     suite_results={model: sr, ok.model: ok}, report_path="r", docs_path="d", json_path="j",
                     seconds=1.0)
    return GateFailed(res)


def test_failed_gate_alerts_once_from_callback_and_history(lake, monkeypatch):
    monkeypatch.setattr(alerts, "load_config", lambda path=None: CFG)
    all_on_time(lake)
    ctx = {"ti": SimpleNamespace(dag_id="transform_shared", task_id="gate_standardized"),
           "exception": _gate_failed()}
    sent = alerts.on_task_failure(ctx, lake)
    assert [a["key"] for a in sent] == ["gate_failed:standardized.stg_tax__taxpayer_registration"]
    assert "uscc" in sent[0]["reason"] and sent[0]["task_id"] == "gate_standardized"
    # the gate history says the same thing: no second alert for that problem
    ops.record_gate_result(lake, run_id="run-7", layer="standardized", model="stg_tax__taxpayer_registration",
                           suite="standardized.stg_tax__taxpayer_registration", success=False,
                           failed=["expect_column_values_to_not_be_null(uscc): 3 unexpected"],
                           ts="2026-11-25T05:00:00Z")
    res = alerts.evaluate(lake, "2026-11-25T06:00:00Z", cfg=CFG)
    assert res["opened"] == [] and "gate_failed:standardized.stg_tax__taxpayer_registration" in res["open"]
    assert alerts.on_task_failure(ctx, lake) == []  # the task fails again: still the same open problem
    assert keys(lake) == ["gate_failed:standardized.stg_tax__taxpayer_registration"]
    # the next run passes: closed
    ops.record_gate_result(lake, run_id="run-8", layer="standardized", model="stg_tax__taxpayer_registration",
                           suite="s", success=True, failed=[], ts="2026-11-25T07:00:00Z")
    res = alerts.evaluate(lake, "2026-11-25T08:00:00Z", cfg=CFG)
    assert [n["key"] for n in res["closed"]] == ["gate_failed:standardized.stg_tax__taxpayer_registration"]
    assert res["open"] == []


def test_task_failure_callback_and_success_closes(lake, monkeypatch):
    monkeypatch.setattr(alerts, "load_config", lambda path=None: CFG)
    ctx = {"ti": SimpleNamespace(dag_id="extract_tax", task_id="extract_taxpayer_registration"),
           "exception": OSError("disk full\nTraceback ...")}
    sent = alerts.on_task_failure(ctx, lake)
    assert len(sent) == 1
    a = sent[0]
    assert a["key"] == "task_failed:extract_tax.extract_taxpayer_registration"
    assert a["dataset"] == "tax.taxpayer_registration"
    assert a["reason"] == "extract_tax.extract_taxpayer_registration failed: OSError: disk full"
    assert alerts.on_task_failure(ctx, lake) == []  # retry fails the same way: no duplicate
    # evaluate does not close task failures (it cannot see them) ...
    res = alerts.evaluate(lake, "2026-11-25T12:00:00Z", cfg=CFG)
    assert "task_failed:extract_tax.extract_taxpayer_registration" in res["open"]
    assert "task_failed:extract_tax.extract_taxpayer_registration" not in [n["key"] for n in res["closed"]]
    # ... the task's next success does
    assert alerts.on_task_success(ctx, lake)["key"] == "task_failed:extract_tax.extract_taxpayer_registration"
    assert alerts.on_task_failure(ctx, lake)[0]["key"] == "task_failed:extract_tax.extract_taxpayer_registration"
    assert keys(lake).count("task_failed:extract_tax.extract_taxpayer_registration") == 2


def test_callback_never_raises(lake, monkeypatch):
    def broken(path=None):
        raise ValueError("config/alerts.yml: broken")

    monkeypatch.setattr(alerts, "load_config", broken)
    assert alerts.on_task_failure({"ti": SimpleNamespace(dag_id="d", task_id="t")}, lake) == []


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.headers["Content-Type"], json.loads(body.decode("utf-8"))))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def webhook():
    _Hook.received, _Hook.status = [], 200
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, _Hook
    srv.shutdown()
    srv.server_close()


def test_webhook_notifier_posts_json_and_retries_after_failure(lake, webhook):
    srv, hook = webhook
    cfg = {**CFG, "notifiers": [{"type": "jsonl"}, {"type": "webhook",
                                                    "url": f"http://127.0.0.1:{srv.server_address[1]}/hook",
                                                    "timeout_seconds": 2}]}
    hook.status = 500  # the receiver is down
    all_on_time(lake)
    res = alerts.evaluate(lake, "2026-11-27T12:00:00Z", cfg=cfg)
    assert res["opened"] and len(hook.received) == len(res["opened"])
    reg = alerts.Registry(lake, cfg)
    assert all(r["notified"] == 0 and "HTTP" in r["notify_error"] for r in reg.problems())
    hook.status = 200
    hook.received.clear()
    res2 = alerts.evaluate(lake, "2026-11-27T13:00:00Z", cfg=cfg)  # retried, once
    assert sorted(a["key"] for a in res2["opened"]) == sorted(a["key"] for a in res["opened"])
    ctype, body = hook.received[0]
    assert ctype.startswith("application/json")
    assert set(body) >= {"dag_id", "task_id", "dataset", "reason", "opened_at", "kind", "key"}
    assert any("公安" in b["reason"] for _, b in hook.received)
    assert all(r["notified"] == 1 for r in reg.problems())
    hook.received.clear()
    assert alerts.evaluate(lake, "2026-11-27T14:00:00Z", cfg=cfg)["opened"] == [] and hook.received == []


class _Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib.send_message."""
    messages: list = []

    def handle(self):
        def say(s):
            self.wfile.write(s.encode() + b"\r\n")

        say("220 stub")
        data, buf = False, []
        for line in self.rfile:
            if data:
                if line.rstrip(b"\r\n") == b".":
                    type(self).messages.append(b"".join(buf))
                    data, buf = False, []
                    say("250 queued")
                else:
                    buf.append(line[1:] if line.startswith(b"..") else line)
                continue
            cmd = line[:4].upper()
            if cmd == b"EHLO":
                say("250-stub")
                say("250 8BITMIME")
            elif cmd == b"DATA":
                data = True
                say("354 go")
            elif cmd == b"QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")


def test_email_notifier_against_local_smtp_stub(lake):
    _Smtp.messages = []
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = {**CFG, "notifiers": [{"type": "email", "host": "127.0.0.1", "port": srv.server_address[1],
                                     "sender": "govlake@example.gov.cn", "to": ["ops@example.gov.cn"]}]}
        deliver(lake, "health", "birth_certificate", "2026-11-20", "2026-11-21T00:00:00Z")
        late = next(p for p in alerts.current_problems(lake, "2026-11-25T12:00:00Z", cfg)
                    if p.key == "late_feed:health.birth_certificate")
        alerts.Registry(lake, cfg).open(late)
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(_Smtp.messages) == 1
    msg = email.message_from_bytes(_Smtp.messages[0], policy=email.policy.default)
    assert msg["To"] == "ops@example.gov.cn"
    assert "late_feed" in msg["Subject"] and "health.birth_certificate" in msg["Subject"]
    body = json.loads(msg.get_content())
    assert body["dataset"] == "health.birth_certificate" and "卫健" in body["reason"]


def test_config_file_and_errors(tmp_path, monkeypatch):
    cfg = alerts.load_config()  # the repository's config/alerts.yml
    assert cfg["notifiers"][0]["type"] == "jsonl" and 0 < cfg["quarantine_rate_threshold"] < 1
    bad = tmp_path / "alerts.yml"
    bad.write_text("quarantine_rate_threshold: lots\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"alerts.yml: quarantine_rate_threshold"):
        alerts.load_config(bad)
    bad.write_text("notifiers:\n  - url: http://x\n", encoding="utf-8")
    monkeypatch.setenv("GOVLAKE_ALERTS_CONFIG", str(bad))
    with pytest.raises(ValueError, match=r"notifiers\[0\] needs a 'type'"):
        alerts.load_config()
