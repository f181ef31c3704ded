"""Tamper-evident audit log: append-only JSON Lines, each entry chained to the previous one.

Files under ``lake.audit_root``::

    audit.jsonl     one entry per line: {seq, ts, kind, payload, prev_hash, hash}
    head.json       {count, last_hash, updated_at}: the anchor, rewritten (atomically) after
                    every append, so a truncated tail is detected
    .lock           flock(2) target serialising writers (processes and threads)

``hash = sha256(canonical JSON of the entry without "hash")`` where canonical JSON is
``json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` in UTF-8; the first
entry's ``prev_hash`` is 64 zeros. Every append takes an exclusive lock, reads the last entry,
writes one line, flushes and fsyncs, then updates the anchor (fsync + rename + dir fsync).

:func:`verify` names the first bad entry (line number and reason) for an edited, deleted,
inserted, reordered or truncated log. The chain shows *changes*; an attacker who can rewrite
the whole log and the anchor can rebuild a valid chain, so the anchor's last hash is also
copied into the catalog at every publication (and can be handed to another party).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from govlake.storage import Lake, atomic_write_text, fsync_dir

GENESIS = "0" * 64
KINDS = ("publication", "query", "query_refused", "access_request", "grant_change", "note")
_FIELDS = ("seq", "ts", "kind", "payload", "prev_hash", "hash")
_thread_lock = threading.Lock()


class AuditError(RuntimeError):
    """The log cannot be appended to safely (e.g. it fails verification)."""


def log_path(lake: Lake) -> Path:
    return lake.audit_root / "audit.jsonl"


def head_path(lake: Lake) -> Path:
    return lake.audit_root / "head.json"


def lock_path(lake: Lake) -> Path:
    return lake.audit_root / ".lock"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode("utf-8")


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


@contextmanager
def _locked(lake: Lake):
    lake.audit_root.mkdir(parents=True, exist_ok=True)
    with _thread_lock:
        fd = os.open(lock_path(lake), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_head(lake: Lake) -> dict | None:
    p = head_path(lake)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return {"count": -1, "last_hash": "", "corrupt": True}


def _last_line(path: Path) -> tuple[bytes | None, bool]:
    """(last line without its newline, whether the file ends with a newline); reads backwards."""
    if not path.exists() or path.stat().st_size == 0:
        return None, True
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 1)
        ends_nl = fh.read(1) == b"\n"
        pos = size - 1 if ends_nl else size  # buf always holds bytes [pos, end of last line)
        buf = b""
        while pos > 0:
            step = min(8192, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            idx = buf.rfind(b"\n")
            if idx != -1:
                return buf[idx + 1:], ends_nl
        return buf, ends_nl


def append(lake: Lake, kind: str, payload: dict) -> dict:
    """Append one entry durably; returns it (with seq and hash). Fails closed (AuditError)
    if the log's tail does not match its anchor (truncation, torn write, corrupt last line)."""
    if kind not in KINDS:
        raise ValueError(f"audit kind {kind!r} is not one of {KINDS}")
    log = log_path(lake)
    with _locked(lake):
        head = _read_head(lake)
        if head and head.get("corrupt"):
            raise AuditError(f"{head_path(lake)} is not valid JSON; run `govlake audit verify`")
        line, ends_nl = _last_line(log)
        if line is None:
            if head and head.get("count", 0) > 0:
                raise AuditError(f"{log}: the log is empty or missing but {head_path(lake)} records "
                                 f"{head.get('count')} entries (truncated); run `govlake audit verify`")
            seq, prev = 1, GENESIS
        else:
            if not ends_nl:
                raise AuditError(f"{log}: the last line is incomplete (torn write); "
                                 "run `govlake audit verify`")
            try:
                last = json.loads(line)
                seq, prev = int(last["seq"]) + 1, str(last["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(f"{log}: the last entry is not valid ({exc}); "
                                 "run `govlake audit verify`") from exc
            if entry_hash(last) != prev:
                raise AuditError(f"{log}: the last entry (seq {last.get('seq')}) does not match its "
                                 "hash (edited); run `govlake audit verify`")
            if head is not None and (head.get("count", 0) > last["seq"] or
                                     (head.get("count") == last["seq"] and head.get("last_hash") != prev)):
                raise AuditError(f"{log}: the tail does not match {head_path(lake)} (count "
                                 f"{head.get('count')}, last seq {last['seq']}): truncated or "
                                 "rewritten; run `govlake audit verify`")
        entry = {
            "seq": seq,
            "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
            "kind": kind,
            "payload": payload,
            "prev_hash": prev,
        }
        # round-trip through JSON so the hash covers exactly what is written
        entry = json.loads(canonical(entry))
        entry["hash"] = entry_hash(entry)
        data = canonical(entry) + b"\n"
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if seq == 1:
            fsync_dir(lake.audit_root)
        atomic_write_text(head_path(lake), json.dumps(
            {"count": seq, "last_hash": entry["hash"], "updated_at": entry["ts"]}) + "\n")
        fsync_dir(lake.audit_root)
        return entry


def entries(lake: Lake) -> list[dict]:
    """All entries (raises ValueError on a line that is not JSON; use verify() first)."""
    p = log_path(lake)
    if not p.exists():
        return []
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]


@dataclass
class VerifyResult:
    ok: bool
    count: int  # entries checked and found valid
    line: int | None = None  # first bad line (1-based), None when ok
    reason: str = ""
    last_hash: str = GENESIS
    anchor_count: int | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"audit log OK: {self.count} entries, chain intact, last hash {self.last_hash[:16]}…"
        where = f"line {self.line}" if self.line is not None else "anchor"
        return f"audit log INVALID at {where}: {self.reason} ({self.count} entries valid before it)"


def verify(lake: Lake) -> VerifyResult:
    log = log_path(lake)
    head = _read_head(lake)
    anchor = head.get("count") if head else None
    if head and head.get("corrupt"):
        return VerifyResult(False, 0, None, f"{head_path(lake)} is not valid JSON", anchor_count=None)
    raw = log.read_bytes() if log.exists() else b""
    lines = raw.split(b"\n")
    torn = bool(raw) and not raw.endswith(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev = GENESIS
    for i, line in enumerate(lines, start=1):
        if torn and i == len(lines):
            return VerifyResult(False, i - 1, i, "incomplete last line (torn or truncated write)",
                                prev, anchor)
        try:
            e = json.loads(line)
        except ValueError:
            return VerifyResult(False, i - 1, i, "not valid JSON (edited or corrupted)", prev, anchor)
        if not isinstance(e, dict) or set(e) != set(_FIELDS):
            return VerifyResult(False, i - 1, i, f"fields are {sorted(e) if isinstance(e, dict) else type(e).__name__},"
                                f" expected {sorted(_FIELDS)}", prev, anchor)
        if e["seq"] != i:
            return VerifyResult(False, i - 1, i, f"seq is {e['seq']}, expected {i} "
                                "(an entry was deleted, inserted or reordered)", prev, anchor)
        if e["prev_hash"] != prev:
            return VerifyResult(False, i - 1, i, "prev_hash does not match the hash of the entry before "
                                "(an entry before it was edited, deleted or reordered)", prev, anchor)
        if entry_hash(e) != e["hash"]:
            return VerifyResult(False, i - 1, i, "hash does not match the entry's content (entry edited)",
                                prev, anchor)
        prev = e["hash"]
    n = len(lines)
    if head is None:
        if n:
            return VerifyResult(False, n, None, f"{head_path(lake)} is missing but the log has {n} "
                                "entries (anchor deleted)", prev, None)
        return VerifyResult(True, 0, last_hash=prev, anchor_count=None)
    if anchor > n:
        return VerifyResult(False, n, n + 1, f"the anchor records {anchor} entries but the log has "
                            f"{n} (entries removed from the end: truncated)", prev, anchor)
    if anchor >= 1:
        e = json.loads(lines[anchor - 1])
        if e["hash"] != head.get("last_hash"):
            return VerifyResult(False, anchor - 1, anchor, "the entry at the anchor's count does not carry "
                                "the anchor's last hash (log rewritten)", prev, anchor)
    return VerifyResult(True, n, last_hash=prev, anchor_count=anchor)


# ---- typed helpers ----------------------------------------------------------------------
def actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return str(os.getuid())


def record_publication(lake: Lake, manifest: dict, gate: dict | None = None) -> dict:
    """Record a publication: product, version, SHA-256 of each file, input deliveries, gate.

    ``manifest`` is the version's ``_manifest.json`` or the publisher's ``Publication.record``
    (extra keys such as ``manifest_sha256`` and ``previous_version`` are kept)."""
    files = manifest.get("files") or []
    payload = {k: v for k, v in manifest.items() if k not in ("columns", "event")}
    payload.update({
        "product": manifest.get("product"),
        "version": manifest.get("version"),
        "run_id": manifest.get("run_id"),
        "created_at": manifest.get("created_at"),
        "row_count": manifest.get("row_count"),
        "files": [
            {"path": f.get("path") or f.get("name") or f.get("file"), "sha256": f.get("sha256")}
            if isinstance(f, dict) else {"path": str(f), "sha256": None}
            for f in files
        ],
        "inputs": manifest.get("inputs") or [],
        "gate": gate if gate is not None else (manifest.get("gate") or manifest.get("gates")),
        "actor": actor(),
    })
    return append(lake, "publication", payload)


def head(lake: Lake) -> dict | None:
    return _read_head(lake)
