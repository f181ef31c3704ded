"""The tamper-evident audit log: chain, every tamper kind detected, concurrent writers, queries."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys

import pytest

import access_support as S
from govlake import audit, query
from govlake.storage import Lake


def _fill(lake: Lake, n: int = 6) -> list[dict]:
    return [audit.append(lake, "note", {"i": i, "text": f"第{i}条 记录"}) for i in range(n)]


def _lines(lake):
    return audit.log_path(lake).read_text(encoding="utf-8").splitlines(keepends=True)


def _write_lines(lake, lines):
    audit.log_path(lake).write_text("".join(lines), encoding="utf-8")


def test_chain_and_fields(lake):
    es = _fill(lake)
    assert [e["seq"] for e in es] == list(range(1, 7))
    assert es[0]["prev_hash"] == audit.GENESIS
    for a, b in zip(es, es[1:]):
        assert b["prev_hash"] == a["hash"]
    assert audit.entries(lake) == es  # what was returned is what is on disk (Chinese round-trips)
    res = audit.verify(lake)
    assert res.ok and res.count == 6 and res.last_hash == es[-1]["hash"]
    assert json.loads(audit.head_path(lake).read_text())["count"] == 6


def test_edited_payload_detected(lake):
    _fill(lake)
    lines = _lines(lake)
    lines[2] = lines[2].replace("第2条", "第9条")
    _write_lines(lake, lines)
    res = audit.verify(lake)
    assert not res.ok and res.line == 3 and "edited" in res.reason


def test_edit_with_recomputed_hash_detected_at_next_entry(lake):
    _fill(lake)
    lines = _lines(lake)
    e = json.loads(lines[1])
    e["payload"]["text"] = "forged"
    e["hash"] = audit.entry_hash(e)
    lines[1] = audit.canonical(e).decode() + "\n"
    _write_lines(lake, lines)
    res = audit.verify(lake)
    assert not res.ok and res.line == 3 and "prev_hash" in res.reason


def test_deleted_entry_detected(lake):
    _fill(lake)
    lines = _lines(lake)
    del lines[3]
    _write_lines(lake, lines)
    res = audit.verify(lake)
    assert not res.ok and res.line == 4 and "deleted" in res.reason


def test_reordered_entries_detected(lake):
    _fill(lake)
    lines = _lines(lake)
    lines[1], lines[2] = lines[2], lines[1]
    _write_lines(lake, lines)
    res = audit.verify(lake)
    assert not res.ok and res.line == 2 and "reordered" in res.reason


def test_truncated_tail_detected_by_anchor(lake):
    _fill(lake)
    _write_lines(lake, _lines(lake)[:4])
    res = audit.verify(lake)
    assert not res.ok and res.line == 5 and "truncated" in res.reason
    # and nobody can append on top of a truncated log (which would hide the truncation)
    with pytest.raises(audit.AuditError, match="truncated"):
        audit.append(lake, "note", {})


def test_emptied_log_and_deleted_anchor_detected(lake):
    _fill(lake)
    audit.log_path(lake).write_text("")
    res = audit.verify(lake)
    assert not res.ok and "truncated" in res.reason
    _fill(Lake(lake.root / "other").ensure())
    other = Lake(lake.root / "other")
    audit.head_path(other).unlink()
    res = audit.verify(other)
    assert not res.ok and "anchor deleted" in res.reason


def test_torn_last_line_detected(lake):
    _fill(lake)
    with open(audit.log_path(lake), "ab") as fh:
        fh.write(b'{"seq": 7, "ts": "2026')
    res = audit.verify(lake)
    assert not res.ok and res.line == 7 and "incomplete" in res.reason
    with pytest.raises(audit.AuditError, match="incomplete"):
        audit.append(lake, "note", {})


def test_verify_cli_exit_codes(lake):
    _fill(lake, 3)
    cmd = [sys.executable, "-m", "govlake.cli", "audit", "verify"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "OK: 3 entries" in p.stdout, p.stdout + p.stderr
    lines = _lines(lake)
    lines[0] = lines[0].replace('"i":0', '"i":1')
    _write_lines(lake, lines)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "line 1" in p.stdout and "INVALID" in p.stdout


def _writer(root: str, tag: str, n: int, barrier) -> None:
    lk = Lake(__import__("pathlib").Path(root))
    barrier.wait(60)  # both processes start appending at the same moment
    for i in range(n):
        audit.append(lk, "note", {"writer": tag, "i": i})


def test_two_processes_appending_at_once_leave_a_valid_chain(lake):
    ctx = mp.get_context("spawn")
    n = 100
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(lake.root), tag, n, barrier)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    res = audit.verify(lake)
    assert res.ok, str(res)
    es = audit.entries(lake)
    assert len(es) == 2 * n
    for tag in ("a", "b"):
        assert [e["payload"]["i"] for e in es if e["payload"]["writer"] == tag] == list(range(n))
    # the writers really interleaved (otherwise this test would not exercise the lock)
    tags = [e["payload"]["writer"] for e in es]
    assert sum(1 for x, y in zip(tags, tags[1:]) if x != y) >= 1


def test_record_publication(lake):
    m = S.publish(lake, "population_base", S.people(5))
    e = audit.record_publication(lake, m)
    p = e["payload"]
    assert e["kind"] == "publication" and p["product"] == "population_base" and p["version"] == 1
    assert p["files"][0]["sha256"] == m["files"][0]["sha256"]
    assert p["inputs"] == m["inputs"] and p["gate"]["passed"] is True
    assert audit.verify(lake).ok


def test_every_allowed_and_refused_query_is_recorded(lake, tmp_path, monkeypatch):
    monkeypatch.setenv("GOVLAKE_TOKEN_KEY", "5a" * 32)
    dbt, grants = S.write_dbt_dir(tmp_path), S.write_grants(tmp_path)
    S.publish(lake, "population_base", S.people(30))
    calls = [
        ("ga_analyst", "人口信息核查", "select count(*) from population_base", "query"),
        ("mz_analyst", "婚姻登记核验", "select id_number, name from population_base", "query"),
        ("stats_public", "人口统计分析", "select * from read_csv('/etc/passwd')", "query_refused"),
        ("expired_role", "出生医学证明核验", "select 1", "query_refused"),
        ("ga_analyst", "好奇", "select 1", "query_refused"),
        ("ga_analyst", "人口信息核查", "select no_such_column from population_base", "query"),
        ("ga_analyst", "人口信息核查", "copy population_base to '/tmp/x.csv'", "query_refused"),
    ]
    for role, purpose, sql, _ in calls:
        try:
            query.run_query(role, purpose, sql, lake=lake, grants_path=grants, dbt_dir=dbt)
        except (query.QueryRefused, query.QueryFailed):
            pass
    es = audit.entries(lake)
    assert [(e["kind"], e["payload"]["role"], e["payload"]["purpose"], e["payload"]["sql"]) for e in es] == \
        [(k, r, p, s) for r, p, s, k in calls]
    ok = es[1]["payload"]
    assert ok["status"] == "ok" and ok["row_count"] == 30 and ok["products"] == {"population_base": 1}
    assert ok["result_columns"] == ["id_number", "name"]
    assert ok["masked_columns"]["population_base"]["id_number"] == "token"
    assert ok["masked_columns"]["population_base"]["name"] == "mask"
    assert set(ok["referenced_columns"]) == {"id_number", "name"} and ok["token_key_id"]
    assert es[2]["payload"]["refused"] == "table function read_csv()"
    assert "expired" in es[3]["payload"]["reason"]
    assert es[5]["payload"]["status"] == "error" and "no_such_column" in es[5]["payload"]["error"]
    assert all(e["ts"] and e["payload"]["actor"] for e in es)
    assert audit.verify(lake).ok


def test_no_result_without_an_audit_record(lake, tmp_path, monkeypatch):
    """If the audit log cannot be written, the query returns nothing (fails closed)."""
    dbt, grants = S.write_dbt_dir(tmp_path), S.write_grants(tmp_path)
    S.publish(lake, "population_base", S.people(5))
    _fill(lake, 3)
    _write_lines(lake, _lines(lake)[:2])  # truncate: appends now refuse
    with pytest.raises(audit.AuditError):
        query.run_query("ga_analyst", "人口信息核查", "select * from population_base",
                        lake=lake, grants_path=grants, dbt_dir=dbt)


def _cli(*args, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "govlake.cli", "audit", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_repair_and_checkpoint_cli(lake, tmp_path):
    work = {"GOVLAKE_WORK_DIR": str(tmp_path / "work")}
    _fill(lake, 3)
    p = _cli("repair", env_extra=work)
    assert p.returncode == 0 and "nothing to repair" in p.stdout, p.stdout + p.stderr
    torn = '{"seq":4,"payload":"半'.encode()
    with open(audit.log_path(lake), "ab") as fh:
        fh.write(torn)
    p = _cli("verify", env_extra=work)
    assert p.returncode == 1 and "line 4" in p.stdout and "govlake audit repair" in p.stdout
    p = _cli("repair", env_extra=work)
    assert p.returncode == 0 and f"sealed a torn last line (line 4, {len(torn)} bytes" in p.stdout, p.stdout + p.stderr
    assert "3 complete entries kept" in p.stdout and "entry 4" in p.stdout
    p = _cli("checkpoint", "--reason", "季度核查", env_extra=work)
    assert p.returncode == 0 and "checkpoint 1 signed" in p.stdout and "5 entries" in p.stdout, p.stderr
    p = _cli("verify", env_extra=work)
    assert p.returncode == 0 and "OK: 5 entries" in p.stdout and "1 signed checkpoint" in p.stdout
    # an edited entry is not "repaired", and a chain broken since the last checkpoint is not signed
    _fill(lake, 2)
    lines = _lines(lake)
    lines[5] = lines[5].replace('"i":0', '"i":5')
    _write_lines(lake, lines)
    p = _cli("repair", env_extra=work)
    assert p.returncode == 1 and "no torn tail to repair" in p.stderr and "line 6" in p.stderr
    p = _cli("checkpoint", env_extra=work)
    assert p.returncode == 1 and "not signing a checkpoint: line 6" in p.stderr, p.stderr
    assert len(audit.checkpoints_path(lake).read_text().splitlines()) == 1
