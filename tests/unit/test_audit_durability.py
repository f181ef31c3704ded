"""Durable audit log: torn tails and repair, intents and outcomes, group commit, signed
checkpoints and witnesses (docs/adr/0012-durable-audit.md). The full-disk case is in
tests/integration/test_audit_fulldisk.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from govlake import audit, metadata
from govlake.site import catalog_pages
from govlake.storage import Lake


@pytest.fixture(autouse=True)
def _own_key_and_witnesses(tmp_path, monkeypatch):
    """Each test signs with its own key (outside the lake) and has its own external witness."""
    monkeypatch.setenv("GOVLAKE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv(audit.WITNESS_ENV, str(tmp_path / "witness_ext"))


def _fill(lake: Lake, n: int = 5) -> list[dict]:
    return [audit.append(lake, "note", {"i": i, "text": f"第{i}条"}) for i in range(n)]


def _forge_chain(lake: Lake, payloads: list[dict]) -> None:
    """What an attacker able to write the lake does: a new, internally valid chain + head."""
    prev, lines = audit.GENESIS, []
    for i, p in enumerate(payloads, start=1):
        e = {"seq": i, "ts": "2026-01-01T00:00:00+00:00", "kind": "note", "payload": p, "prev_hash": prev}
        e["hash"] = audit.entry_hash(e)
        lines.append(audit.canonical(e) + b"\n")
        prev = e["hash"]
    audit.log_path(lake).write_bytes(b"".join(lines))
    audit.head_path(lake).write_text(json.dumps({"count": len(payloads), "last_hash": prev,
                                                 "updated_at": "2026-01-01T00:00:00+00:00"}))


# ---- torn tail and repair ----------------------------------------------------------------------
def test_torn_tail_is_refused_then_repaired_keeping_every_complete_entry(lake):
    es = _fill(lake, 4)
    torn = '{"seq":5,"ts":"2026-11-30T10:00:00+00:00","kind":"note","payload":{"text":"第'.encode()
    with open(audit.log_path(lake), "ab") as fh:
        fh.write(torn)
    res = audit.verify(lake)
    assert not res.ok and res.line == 5 and "incomplete last line" in res.reason
    assert "govlake audit repair" in res.reason and res.count == 4
    with pytest.raises(audit.AuditError, match="govlake audit repair"):
        audit.append(lake, "note", {})

    rep = audit.repair(lake, who="ops_oncall")
    assert rep["kind"] == "repair" and rep["seq"] == 5
    p = rep["payload"]
    assert p["torn_bytes"] == len(torn) and p["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    assert p["torn_line"] == 5 and p["last_complete_seq"] == 4 and p["actor"] == "ops_oncall"
    assert (lake.audit_root / p["evidence"]).read_bytes() == torn  # the evidence is kept
    assert p["evidence"].startswith("torn-") and p["evidence"].endswith(".bin")
    assert audit.entries(lake)[:4] == es  # every complete entry kept, unchanged
    res = audit.verify(lake)
    assert res.ok and res.count == 5, str(res)
    assert audit.append(lake, "note", {"after": "repair"})["seq"] == 6
    assert audit.verify(lake).ok
    assert audit.repair(lake) is None  # nothing left to repair


def test_torn_first_line_repaired(lake):
    audit.log_path(lake).write_bytes(b'{"seq":1,"ts"')
    assert not audit.verify(lake).ok
    rep = audit.repair(lake)
    assert rep["seq"] == 1 and rep["payload"]["last_complete_seq"] == 0
    assert audit.verify(lake).ok


def test_repair_refuses_an_edited_entry_and_changes_nothing(lake):
    _fill(lake, 4)
    raw = audit.log_path(lake).read_bytes().replace("第1条".encode(), "第7条".encode())
    audit.log_path(lake).write_bytes(raw)
    with pytest.raises(audit.AuditError, match="no torn tail to repair.*line 2.*edited"):
        audit.repair(lake)
    # an edit in the middle plus a torn tail: still refused (repair only seals the tail)
    audit.log_path(lake).write_bytes(raw + b'{"seq":5')
    with pytest.raises(audit.AuditError, match="not repaired.*line 2"):
        audit.repair(lake)
    assert audit.log_path(lake).read_bytes() == raw + b'{"seq":5'
    assert not list(lake.audit_root.glob("torn-*.bin"))
    res = audit.verify(lake)
    assert not res.ok and res.line == 2


def test_repair_refuses_a_truncated_log(lake):
    _fill(lake, 4)
    lines = audit.log_path(lake).read_bytes().splitlines(keepends=True)
    audit.log_path(lake).write_bytes(b"".join(lines[:2]) + lines[2][:10])  # entries 3, 4 gone
    with pytest.raises(audit.AuditError, match="truncated"):
        audit.repair(lake)


# ---- intent / outcome ----------------------------------------------------------------------
def test_begin_without_finish_is_reported_as_interrupted_but_ok(lake):
    intent = audit.begin(lake, "query", {"role": "ga_analyst", "sql": "select 1", "purpose": "人口核查"})
    assert intent["kind"] == "request" and intent["payload"]["request_kind"] == "query"
    assert audit.entries(lake)[-1] == intent  # durable before the caller proceeds
    res = audit.verify(lake)
    assert res.ok and res.interrupted == 1
    assert "1 request without an outcome (interrupted)" in str(res)


def test_begin_finish_chain(lake):
    a = audit.begin(lake, "query", {"n": 1})
    b = audit.begin(lake, "download", {"n": 2})
    out_b = audit.finish(lake, b["seq"], {"status": "ok", "rows": 3})
    out_a = audit.finish(lake, a, {"status": "error", "error": "超时"})
    assert out_b["kind"] == "outcome" and out_b["payload"] == {
        "intent_seq": b["seq"], "intent_hash": b["hash"], "outcome": {"status": "ok", "rows": 3}}
    assert out_a["payload"]["intent_hash"] == a["hash"]
    assert out_a["payload"]["outcome"]["error"] == "超时"
    res = audit.verify(lake)
    assert res.ok and res.interrupted == 0 and "interrupted" not in str(res)
    with pytest.raises(ValueError, match="already has an outcome"):
        audit.finish(lake, a["seq"], {"status": "ok"})
    with pytest.raises(ValueError, match="not a request"):
        audit.finish(lake, out_a["seq"], {"status": "ok"})


def test_finish_from_another_process_finds_the_intent_in_the_log(lake):
    a = audit.begin(lake, "query", {})
    audit._open_intents.clear()  # as if begun by another process
    assert audit.finish(lake, a["seq"], {"status": "ok"})["payload"]["intent_hash"] == a["hash"]
    assert audit.verify(lake).interrupted == 0


def test_forged_outcome_detected(lake):
    a = audit.begin(lake, "query", {})
    audit.finish(lake, a, {"status": "ok"})
    lines = audit.log_path(lake).read_bytes().splitlines(keepends=True)
    e = json.loads(lines[1])
    e["payload"]["intent_hash"] = "f" * 64
    e["hash"] = audit.entry_hash(e)
    audit.log_path(lake).write_bytes(lines[0] + audit.canonical(e) + b"\n")
    audit.head_path(lake).write_text(json.dumps({"count": 2, "last_hash": e["hash"]}))
    res = audit.verify(lake)
    assert not res.ok and res.line == 2 and "not an open request" in res.reason


def test_reserved_kinds_only_through_their_functions(lake):
    for kind in ("request", "outcome", "repair", "checkpoint"):
        with pytest.raises(ValueError, match=kind):
            audit.append(lake, kind, {})
    with pytest.raises(ValueError, match="ASCII"):
        audit.begin(lake, "查询", {})
    assert not audit.log_path(lake).exists()


def test_a_killed_request_leaves_its_intent(lake):
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from govlake import audit\n"
        "from govlake.storage import Lake\n"
        "audit.begin(Lake(Path(sys.argv[1])), 'query', {'sql': 'select 1'})\n"
        "print('begun', flush=True)\n"
        "time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(lake.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "begun"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    res = audit.verify(lake)
    assert res.ok and res.interrupted == 1 and res.count == 1
    assert audit.entries(lake)[0]["payload"] == {"request_kind": "query", "sql": "select 1"}


# ---- group commit ------------------------------------------------------------------------
def test_group_commit_8_threads(lake, capsys):
    threads, per = 8, 200
    before = dict(audit.stats)
    got: list[list[int]] = [[] for _ in range(threads)]
    errors = []
    start = threading.Barrier(threads)

    def work(t):
        try:
            start.wait(30)
            for i in range(per):
                e = audit.append(lake, "note", {"t": t, "i": i})
                got[t].append(e["seq"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    elapsed = time.perf_counter() - t0
    assert not errors
    total = threads * per
    res = audit.verify(lake)
    assert res.ok and res.count == total, str(res)
    seqs = sorted(s for g in got for s in g)
    assert seqs == list(range(1, total + 1))  # unique and contiguous
    es = audit.entries(lake)
    for t in range(threads):  # each thread's entries in its own order, each returned seq is its entry
        mine = [e for e in es if e["payload"]["t"] == t]
        assert [e["payload"]["i"] for e in mine] == list(range(per))
        assert [e["seq"] for e in mine] == got[t]
    batches = audit.stats["batches"] - before["batches"]
    assert audit.stats["entries"] - before["entries"] == total
    assert batches < total  # entries really were grouped
    with capsys.disabled():
        print(f"\n[audit group commit] {total} appends by {threads} threads in {elapsed:.2f} s: "
              f"{total / elapsed:,.0f} appends/s, {batches} batches "
              f"({total / batches:.1f} entries per write+fsync)")


# ---- signed checkpoints and witnesses ------------------------------------------------------
def test_checkpoint_is_signed_and_exported_to_every_witness(lake, tmp_path):
    _fill(lake, 3)
    rec = audit.checkpoint(lake, "手工 checkpoint")
    assert rec["count"] == 4 and rec["checkpoint"] == 1  # the checkpoint entry itself is signed
    e = audit.entries(lake)[-1]
    assert e["kind"] == "checkpoint" and e["hash"] == rec["last_hash"] and e["payload"]["reason"] == "手工 checkpoint"
    key = audit.key_path()
    assert key.parent == tmp_path / "work" / "secrets" and key.stat().st_mode & 0o777 == 0o600
    assert lake.root not in key.parents
    assert audit.public_key_path().exists()
    depts = sorted(metadata.departments())
    assert depts  # registered departments each get a copy
    files = [audit.checkpoints_path(lake)] + [audit.witness_root(lake) / f"{d}.jsonl" for d in depts] + \
        [tmp_path / "witness_ext" / audit.EXTERNAL_WITNESS_NAME]
    for f in files:
        assert json.loads(f.read_text(encoding="utf-8").splitlines()[-1]) == rec, f
    assert audit._check_signature(rec) and rec["public_key"] == audit._pinned_public_key()
    res = audit.verify(lake)
    assert res.ok and res.checkpoints == 1 and res.witness_files == len(files), str(res)
    assert audit.checkpoint(lake, "again")["checkpoint"] == 2
    assert audit.verify(lake).checkpoints == 2


def test_consistent_rewrite_of_log_and_head_detected_by_a_witness(lake, tmp_path):
    _fill(lake, 3)
    rec = audit.checkpoint(lake, "publication population_base v1")
    audit.append(lake, "note", {"later": True})
    # rewrite everything the attacker can reach in audit/: log, head and checkpoints.jsonl
    _forge_chain(lake, [{"i": i, "text": "harmless"} for i in range(5)])
    audit.checkpoints_path(lake).unlink()
    res = audit.verify(lake)
    assert not res.ok and res.line == rec["count"]
    assert f"log rewritten after checkpoint 1 signed at {rec['ts']}" in res.reason
    # and with the lake's own witnesses gone too, the external witness still catches it
    for f in audit.witness_root(lake).glob("*.jsonl"):
        f.unlink()
    res = audit.verify(lake)
    assert not res.ok and "log rewritten after checkpoint 1" in res.reason
    assert "witness_ext" in res.reason


def test_deleting_log_and_head_detected(lake):
    _fill(lake, 3)
    audit.checkpoint(lake, "x")
    audit.log_path(lake).unlink()
    audit.head_path(lake).unlink()
    res = audit.verify(lake)
    assert not res.ok and "the log has 0 entries but checkpoint 1" in res.reason
    assert "deleted together with head.json" in res.reason


def test_deleting_log_and_head_detected_from_the_catalog_anchor(lake, monkeypatch):
    monkeypatch.delenv(audit.WITNESS_ENV)
    _fill(lake, 3)
    catalog_pages.build(lake)  # copies head.json's anchor into catalog.json
    assert json.loads((lake.catalog_root / "catalog.json").read_text())["audit_anchor"]["count"] == 3
    audit.log_path(lake).unlink()
    audit.head_path(lake).unlink()
    res = audit.verify(lake)
    assert not res.ok and "catalog.json" in res.reason and "records 3" in res.reason
    # a rewritten chain of the same length does not match the catalog's copy either
    _forge_chain(lake, [{"i": i} for i in range(3)])
    res = audit.verify(lake)
    assert not res.ok and res.line == 3 and "log rewritten after the anchor in" in res.reason


def test_edited_checkpoint_has_a_bad_signature(lake):
    _fill(lake, 2)
    audit.checkpoint(lake, "x")
    w = audit.witness_root(lake) / f"{sorted(metadata.departments())[0]}.jsonl"
    rec = json.loads(w.read_text())
    rec["reason"] = "something else"
    w.write_text(json.dumps(rec) + "\n")
    res = audit.verify(lake)
    assert not res.ok and "bad signature" in res.reason and w.name in res.reason


def test_checkpoint_signed_by_another_key_is_rejected(lake, tmp_path, monkeypatch):
    """The attacker rewrites the chain and every copy, signing with a key of their own."""
    _fill(lake, 2)
    audit.checkpoint(lake, "x")
    _forge_chain(lake, [{"i": i} for i in range(3)])
    for f in [audit.checkpoints_path(lake), *audit.witness_root(lake).glob("*.jsonl"),
              tmp_path / "witness_ext" / audit.EXTERNAL_WITNESS_NAME]:
        f.unlink()
    pinned = audit.public_key_path().read_bytes()
    monkeypatch.setenv("GOVLAKE_WORK_DIR", str(tmp_path / "attacker"))
    audit.checkpoint(lake, "forged")  # a consistent chain + head + checkpoints, other key
    assert audit.verify(lake).ok  # against the attacker's own key it looks fine…
    monkeypatch.setenv("GOVLAKE_WORK_DIR", str(tmp_path / "work"))
    assert audit.public_key_path().read_bytes() == pinned
    res = audit.verify(lake)  # …but not against the lake's pinned key
    assert not res.ok and "not the audit key" in res.reason


def test_signing_key_must_not_be_in_the_lake_nor_readable_by_others(lake, monkeypatch):
    _fill(lake, 1)
    audit.checkpoint(lake, "x")
    os.chmod(audit.key_path(), 0o644)
    with pytest.raises(audit.AuditError, match="readable by others"):
        audit.checkpoint(lake, "y")
    monkeypatch.setenv("GOVLAKE_WORK_DIR", str(lake.root / "work"))
    with pytest.raises(audit.AuditError, match="inside the lake"):
        audit.checkpoint(lake, "z")


def test_record_publication_signs_a_checkpoint(lake):
    import access_support as S

    m = S.publish(lake, "population_base", S.people(3))
    e = audit.record_publication(lake, m)
    cp = json.loads(audit.checkpoints_path(lake).read_text().splitlines()[-1])
    assert cp["reason"] == "publication population_base v1" and cp["count"] == e["seq"] + 1
    assert audit.verify(lake).checkpoints == 1


def test_checkpoint_refuses_to_sign_a_broken_chain(lake):
    _fill(lake, 3)
    audit.checkpoint(lake, "first")
    _fill(lake, 3)
    raw = audit.log_path(lake).read_bytes()
    audit.log_path(lake).write_bytes(raw.replace("第1条".encode(), "第8条".encode()))  # entry 6
    with pytest.raises(audit.AuditError, match="not signing a checkpoint: line 6"):
        audit.checkpoint(lake, "second")
    # a log rewritten under the previous checkpoint is not signed either
    _forge_chain(lake, [{"i": i} for i in range(8)])
    with pytest.raises(audit.AuditError, match="rewritten or truncated after checkpoint 1"):
        audit.checkpoint(lake, "third")
    assert len(audit.checkpoints_path(lake).read_text().splitlines()) == 1
