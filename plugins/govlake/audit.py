"""Tamper-evident, durable audit log: append-only JSON Lines, each entry chained to the previous one.

Files under ``lake.audit_root``::

    audit.jsonl        one entry per line: {seq, ts, kind, payload, prev_hash, hash}
    head.json          {count, last_hash, updated_at}: the anchor, overwritten in place after
                       every committed batch (fsynced at most once a second), so a truncated
                       tail is detected
    checkpoints.jsonl  signed checkpoints (Ed25519) of (count, last_hash); also exported to
                       every witness (below)
    torn-<ts>.bin      the bytes of a torn tail removed by :func:`repair` (evidence)
    .lock              flock(2) target serialising writers across processes

``hash = sha256(canonical JSON of the entry without "hash")`` where canonical JSON is
``json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` in UTF-8; the first
entry's ``prev_hash`` is 64 zeros.

Durability (docs/adr/0012-durable-audit.md). An append returns only once its line is complete
on disk (every byte written, ``fsync``). If the write or the fsync fails (full disk, I/O
error) the file is truncated back to its previous size and :class:`AuditError` is raised, so no
torn tail is left where that is possible. A torn tail that exists anyway (crash, kill -9 in the
middle of a write) makes :func:`append` refuse and :func:`verify` say INVALID until
:func:`repair` (``govlake audit repair``) seals it: the torn bytes are kept as evidence, the
file is cut back to its last complete line and a ``repair`` entry records what was removed.
Nothing else is "repaired": an edited entry in the middle stays INVALID.

Group commit. Appenders in one process queue their entries; one of them (the leader) takes the
flock, reads the tail once, writes every queued entry in one ``write`` and one ``fsync``,
updates head.json and wakes the others. Every caller returns only after its own entry is
durable. Between processes the flock serialises batches as before.

Audit before work. :func:`begin` durably records an intent (kind ``request``) before the caller
does anything; :func:`finish` appends the ``outcome`` entry naming the intent's seq and hash. A
request killed in between leaves its intent; :func:`verify` counts those (still OK).

Anchors and witnesses. The chain shows *changes*; someone able to rewrite the whole log and
head.json can rebuild a valid chain. So :func:`verify` also compares the chain with every
other copy of its state it knows: the anchor the catalog copies into ``catalog.json``, and the
signed checkpoints (:func:`checkpoint`, taken at every publication) in ``checkpoints.jsonl``,
in one witness file per department (``<lake>/_meta/witness/<dept>.jsonl``) and in every
directory named in ``$GOVLAKE_AUDIT_WITNESS_DIRS``. The signing key lives outside the lake
(``config.work_dir()/secrets/audit-ed25519.key``, 0600, created on first use); its public key
is written beside it and into every checkpoint.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from govlake import config
from govlake.storage import Lake, fsync_dir

log = logging.getLogger(__name__)

GENESIS = "0" * 64
KINDS = ("publication", "query", "query_refused", "access_request", "grant_change", "note",
         "request", "outcome", "repair", "checkpoint")
# kinds only written by their own function (so every entry of these kinds means what it says)
_RESERVED = {"request": "begin()", "outcome": "finish()", "repair": "repair()",
             "checkpoint": "checkpoint()"}
_FIELDS = ("seq", "ts", "kind", "payload", "prev_hash", "hash")
WITNESS_ENV = "GOVLAKE_AUDIT_WITNESS_DIRS"
EXTERNAL_WITNESS_NAME = "govlake-audit-checkpoints.jsonl"
_CHECKPOINT_SIGNED = ("checkpoint", "count", "last_hash", "size", "ts", "reason", "lake")


class AuditError(RuntimeError):
    """The log cannot be appended to safely (it fails verification, or the write failed)."""


# ---- paths --------------------------------------------------------------------------------
def log_path(lake: Lake) -> Path:
    return lake.audit_log


def head_path(lake: Lake) -> Path:
    return lake.audit_head


def lock_path(lake: Lake) -> Path:
    return lake.audit_lock


def checkpoints_path(lake: Lake) -> Path:
    return lake.audit_checkpoints


def witness_root(lake: Lake) -> Path:
    return lake.witness_root


def key_path() -> Path:
    return config.work_dir() / "secrets" / "audit-ed25519.key"


def public_key_path() -> Path:
    return config.work_dir() / "secrets" / "audit-ed25519.pub"


def external_witness_dirs() -> list[Path]:
    raw = os.environ.get(WITNESS_ENV, "")
    return [Path(p) for p in raw.split(os.pathsep) if p.strip()]


# ---- encoding -----------------------------------------------------------------------------
def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode("utf-8")


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is not an error by itself)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - the kernel reports errors by raising
            raise OSError(errno.EIO, "write returned 0 bytes")
        view = view[n:]


# ---- locking and group commit ---------------------------------------------------------------
@contextmanager
def _flock(lake: Lake, mode: int = fcntl.LOCK_EX):
    lake.audit_root.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(lake), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _Item:
    __slots__ = ("kind", "payload", "done", "entry", "error")

    def __init__(self, kind: str, payload: dict):
        self.kind, self.payload = kind, payload
        self.done, self.entry, self.error = False, None, None


class _Writer:
    """Per-process group-commit state for one audit directory."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: list[_Item] = []
        self.leader = False


_writers: dict[str, _Writer] = {}
_writers_lock = threading.Lock()
# counters for tests/benchmarks: committed batches and entries (this process)
stats = {"batches": 0, "entries": 0}


def _reset_after_fork() -> None:  # a forked child must not inherit a leader that is not there
    global _writers_lock
    _writers.clear()
    _writers_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _writer_for(lake: Lake) -> _Writer:
    key = str(lake.audit_root.resolve())
    with _writers_lock:
        w = _writers.get(key)
        if w is None:
            w = _writers[key] = _Writer()
        return w


@contextmanager
def _exclusive(lake: Lake):
    """Sole writer of this lake's log: in-process leadership (no batch in flight) + flock."""
    w = _writer_for(lake)
    with w.cond:
        while w.leader:
            w.cond.wait()
        w.leader = True
    try:
        with _flock(lake):
            yield
    finally:
        with w.cond:
            w.leader = False
            w.cond.notify_all()


def _submit(lake: Lake, kind: str, payload: dict) -> dict:
    """Queue one entry; return it once it is durable (group commit, see the module doc)."""
    # the hash must cover exactly what is written: round-trip the payload (in the caller's thread)
    item = _Item(kind, json.loads(canonical(payload)))
    w = _writer_for(lake)
    with w.cond:
        w.queue.append(item)
        while w.leader and not item.done:
            w.cond.wait()
        if not item.done:
            w.leader = True
    if not item.done:
        batch: list[_Item] = []
        try:
            with _flock(lake):
                with w.cond:
                    batch, w.queue = w.queue, []
                try:
                    for it, e in zip(batch, _commit(lake, [(it.kind, it.payload) for it in batch])):
                        it.entry = e
                except BaseException as exc:  # every entry of the failed batch fails
                    for it in batch:
                        it.error = exc
        except BaseException as exc:  # the flock itself failed: only this caller's entry fails
            with w.cond:
                if not batch and item in w.queue:
                    w.queue.remove(item)
                    item.error = exc
        finally:
            with w.cond:
                for it in batch:
                    it.done = True
                item.done = True
                w.leader = False
                w.cond.notify_all()
    if item.error is not None:
        if isinstance(item.error, AuditError):
            raise AuditError(str(item.error)) from item.error
        raise item.error
    return item.entry


# ---- the tail and the anchor ------------------------------------------------------------------
def _read_head(lake: Lake) -> dict | None:
    p = head_path(lake)
    if not p.exists():
        return None
    try:
        h = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(h, dict) or not isinstance(h.get("count"), int):
            raise ValueError("not an anchor")
        return h
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


def _tail_state(lake: Lake) -> tuple[int, str]:
    """(next seq, hash of the last entry), or AuditError if the tail cannot be appended to."""
    log_ = log_path(lake)
    head = _read_head(lake)
    if head and head.get("corrupt"):
        raise AuditError(f"{head_path(lake)} is not valid JSON; run `govlake audit verify`")
    line, ends_nl = _last_line(log_)
    if line is None:
        if head and head.get("count", 0) > 0:
            raise AuditError(f"{log_}: the log is empty or missing but {head_path(lake)} records "
                             f"{head.get('count')} entries (truncated); run `govlake audit verify`")
        return 1, GENESIS
    if not ends_nl:
        raise AuditError(f"{log_}: the last line is incomplete (torn write, e.g. a crash or a full "
                         "disk); nothing can be appended until it is sealed: run "
                         "`govlake audit repair` (keeps every complete entry and the torn bytes)")
    try:
        last = json.loads(line)
        seq, prev = int(last["seq"]) + 1, str(last["hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"{log_}: the last entry is not valid ({exc}); "
                         "run `govlake audit verify`") from exc
    if entry_hash(last) != prev:
        raise AuditError(f"{log_}: the last entry (seq {last.get('seq')}) does not match its "
                         "hash (edited); run `govlake audit verify`")
    if head is not None and (head.get("count", 0) > last["seq"] or
                             (head.get("count") == last["seq"] and head.get("last_hash") != prev)):
        raise AuditError(f"{log_}: the tail does not match {head_path(lake)} (count "
                         f"{head.get('count')}, last seq {last['seq']}): truncated or "
                         "rewritten; run `govlake audit verify`")
    return seq, prev


_HEAD_SIZE = 256  # head.json is overwritten in place at a fixed size (see _write_head)
_HEAD_SYNC_EVERY = 1.0  # seconds between fsyncs of head.json
_head_synced: dict[str, float] = {}


def _write_head(lake: Lake, count: int, last_hash: str, ts: str, sync: bool = False) -> None:
    """Overwrite head.json in place (fixed size, padded with spaces) after a batch is durable.

    Readers take the flock, so they never see a half-written head. It is fsynced at most once a
    second (and when ``sync``): a rename or an fsync per batch cost 2-3 ms each, more than the
    log's own fsync. After a power loss head.json may therefore lag the log by up to a second,
    which verify accepts (an anchor may be below the log's count, never above it). A failure is
    logged, not raised: the entries are already durable and a stale anchor is still valid."""
    p = head_path(lake)
    data = json.dumps({"count": count, "last_hash": last_hash, "updated_at": ts}).encode()
    data = data.ljust(_HEAD_SIZE - 1) + b"\n"
    key = str(p)
    try:
        created = not p.exists()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            n = os.pwrite(fd, data, 0)
            if n != len(data):
                raise OSError(errno.EIO, f"short write of {n} of {len(data)} bytes")
            if os.fstat(fd).st_size != len(data):  # written by an older version (rename)
                os.ftruncate(fd, len(data))
            now = time.monotonic()
            if sync or created or now - _head_synced.get(key, 0.0) >= _HEAD_SYNC_EVERY:
                os.fsync(fd)
                _head_synced[key] = now
        finally:
            os.close(fd)
        if created:
            fsync_dir(lake.audit_root)
    except OSError as exc:
        log.warning("audit: entries up to %s are durable in %s but %s could not be updated (%s)",
                    count, log_path(lake), p, exc)


def _commit(lake: Lake, items: list[tuple[str, dict]]) -> list[dict]:
    """Write entries (kind, payload-already-canonical) as one batch. Caller holds the flock and
    in-process leadership. All or nothing: on failure the file is cut back and AuditError raised."""
    log_ = log_path(lake)
    seq, prev = _tail_state(lake)
    ts = _now()
    out, chunks = [], []
    for kind, payload in items:
        e = {"seq": seq, "ts": ts, "kind": kind, "payload": payload, "prev_hash": prev}
        e["hash"] = entry_hash(e)
        out.append(e)
        chunks.append(canonical(e) + b"\n")
        seq, prev = seq + 1, e["hash"]
    data = b"".join(chunks)
    fd = os.open(log_, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError as exc:
            what = f"{len(items)} entr{'y' if len(items) == 1 else 'ies'} ({len(data)} bytes)"
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            except OSError as exc2:
                raise AuditError(
                    f"{log_}: could not write {what}: {exc.strerror or exc}; cutting the file back "
                    f"to {size} bytes also failed ({exc2.strerror or exc2}), so a torn tail may be "
                    "left: run `govlake audit repair` once the cause is fixed") from exc
            raise AuditError(f"{log_}: could not write {what}: {exc.strerror or exc}; nothing was "
                             f"recorded (the file was cut back to its previous {size} bytes)") from exc
    finally:
        os.close(fd)
    if out[0]["seq"] == 1:
        fsync_dir(lake.audit_root)
    _write_head(lake, out[-1]["seq"], out[-1]["hash"], ts,
                sync=any(k in ("checkpoint", "repair") for k, _ in items))
    stats["batches"] += 1
    stats["entries"] += len(out)
    return out


# ---- public writers -------------------------------------------------------------------------
def append(lake: Lake, kind: str, payload: dict) -> dict:
    """Append one entry durably; returns it (with seq and hash) once it is on disk. Fails closed
    (AuditError) if the log's tail does not match its anchor (truncation, torn write, corrupt
    last line) or if the write fails (the file is then cut back: nothing half-written stays)."""
    if kind not in KINDS:
        raise ValueError(f"audit kind {kind!r} is not one of {KINDS}")
    if kind in _RESERVED:
        raise ValueError(f"audit kind {kind!r} is written by audit.{_RESERVED[kind]}, not append()")
    if not isinstance(payload, dict):
        raise ValueError(f"audit payload must be a dict, got {type(payload).__name__}")
    return _submit(lake, kind, payload)


_open_intents: dict[tuple[str, int], str] = {}  # (audit dir, seq) -> hash, for finish()
_MAX_OPEN = 100_000


def begin(lake: Lake, kind: str, payload: dict) -> dict:
    """Record the intent to serve a request before doing it; returns the entry once durable.

    The entry's kind is ``request`` and ``payload["request_kind"]`` is ``kind`` (an ASCII name of
    what is requested, e.g. ``query`` or ``download``). Pass the entry (or its seq) to
    :func:`finish` when the request is over, whatever its result."""
    if not isinstance(kind, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", kind):
        raise ValueError(f"audit request kind {kind!r} must be an ASCII identifier")
    if not isinstance(payload, dict):
        raise ValueError(f"audit payload must be a dict, got {type(payload).__name__}")
    if "request_kind" in payload:
        raise ValueError("audit payload key 'request_kind' is set by begin()")
    e = _submit(lake, "request", {"request_kind": kind, **payload})
    with _writers_lock:
        if len(_open_intents) >= _MAX_OPEN:  # forget the oldest; finish() falls back to a scan
            _open_intents.pop(next(iter(_open_intents)))
        _open_intents[(str(lake.audit_root.resolve()), e["seq"])] = e["hash"]
    return e


def _find_open_intent(lake: Lake, seq: int) -> str:
    """Hash of request ``seq`` read from the log; ValueError if it is not an open request."""
    found = None
    for i, e in enumerate(entries(lake), start=1):
        if i == seq:
            if e.get("kind") != "request" or e.get("seq") != seq:
                raise ValueError(f"{log_path(lake)}: entry {seq} is a {e.get('kind')!r} entry, "
                                 "not a request begun with audit.begin()")
            found = e["hash"]
        elif found and e.get("kind") == "outcome" and e["payload"].get("intent_seq") == seq:
            raise ValueError(f"{log_path(lake)}: request {seq} already has an outcome (entry {i})")
    if found is None:
        raise ValueError(f"{log_path(lake)}: there is no entry {seq}")
    return found


def finish(lake: Lake, intent_seq: int | dict, outcome: dict) -> dict:
    """Append the outcome of a request begun with :func:`begin` (``intent_seq`` is its seq or
    the entry begin returned). The entry (kind ``outcome``) carries ``intent_seq``,
    ``intent_hash`` and ``outcome``; returns it once durable."""
    if isinstance(intent_seq, dict):
        intent_seq = intent_seq["seq"]
    if not isinstance(intent_seq, int) or isinstance(intent_seq, bool) or intent_seq < 1:
        raise ValueError(f"intent_seq must be a positive int, got {intent_seq!r}")
    if not isinstance(outcome, dict):
        raise ValueError(f"audit outcome must be a dict, got {type(outcome).__name__}")
    key = (str(lake.audit_root.resolve()), intent_seq)
    with _writers_lock:
        h = _open_intents.pop(key, None)
    if h is None:
        h = _find_open_intent(lake, intent_seq)
    try:
        return _submit(lake, "outcome", {"intent_seq": intent_seq, "intent_hash": h,
                                         "outcome": outcome})
    except BaseException:
        with _writers_lock:  # not recorded: the request is still open
            _open_intents[key] = h
        raise


def entries(lake: Lake) -> list[dict]:
    """All entries (raises ValueError on a line that is not JSON; use verify() first)."""
    p = log_path(lake)
    if not p.exists():
        return []
    return [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]


# ---- repair ---------------------------------------------------------------------------------
def repair(lake: Lake, who: str | None = None) -> dict | None:
    """Seal a torn tail: keep every complete entry, move the torn bytes to
    ``audit/torn-<ts>.bin``, cut the log back to its last complete line and append a ``repair``
    entry (length and SHA-256 of the torn bytes, evidence file, who ran it). Returns that entry,
    or None when there is nothing to repair (log valid, tail complete). Anything else wrong with
    the log (an edited, deleted or reordered entry, a truncation) is refused with AuditError."""
    log_ = log_path(lake)
    with _exclusive(lake):
        raw = log_.read_bytes() if log_.exists() else b""
        if not raw or raw.endswith(b"\n"):
            res = _verify(lake, raw)
            if res.ok:
                return None
            raise AuditError(f"{log_}: the last line is complete, there is no torn tail to repair; "
                             f"{res}. `govlake audit repair` only seals a torn last line — this must "
                             "be investigated, not repaired")
        keep = raw.rfind(b"\n") + 1
        torn = raw[keep:]
        res = _verify(lake, raw[:keep])
        torn_line = raw.count(b"\n", 0, keep) + 1
        if not res.ok:
            raise AuditError(f"{log_}: not repaired: besides the torn last line (line {torn_line}) "
                             f"the log is not valid: {res}")
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        evidence = lake.audit_root / f"torn-{stamp}.bin"
        fd = os.open(evidence, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            _write_all(fd, torn)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(lake.audit_root)
        fd = os.open(log_, os.O_WRONLY)
        try:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        finally:
            os.close(fd)
        payload = {
            "torn_bytes": len(torn),
            "torn_sha256": hashlib.sha256(torn).hexdigest(),
            "torn_line": torn_line,
            "offset": keep,
            "evidence": evidence.name,
            "last_complete_seq": res.count,
            "actor": who or actor(),
        }
        return _commit(lake, [("repair", json.loads(canonical(payload)))])[0]


# ---- signing key and checkpoints ----------------------------------------------------------------
def _load_or_create_key(lake: Lake):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    kp, pp = key_path(), public_key_path()
    root = lake.root.resolve()
    if kp.resolve() == root or root in kp.resolve().parents:
        raise AuditError(f"the audit signing key {kp} would be inside the lake {root}: set "
                         "GOVLAKE_WORK_DIR to a directory outside the lake")
    if not kp.exists():
        if pp.exists():
            raise AuditError(f"{pp} exists but the signing key {kp} is missing: restore it (a new "
                             "key would make every earlier checkpoint unverifiable)")
        kp.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(kp.parent, 0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        tmp = kp.with_name(f".{kp.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, kp)  # the first process to create the key wins; the others read it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        fsync_dir(kp.parent)
    mode = kp.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuditError(f"the audit signing key {kp} is readable by others (mode {mode:o}); "
                         f"run: chmod 600 {kp}")
    key = serialization.load_pem_private_key(kp.read_bytes(), password=None)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if not pp.exists():
        tmp = pp.with_name(f".{pp.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(pub_pem)
        os.chmod(tmp, 0o644)
        os.replace(tmp, pp)
        fsync_dir(pp.parent)
    elif pp.read_bytes().strip() != pub_pem.strip():
        raise AuditError(f"{pp} does not hold the public key of {kp}")
    return key


def _raw_public(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pinned_public_key() -> str | None:
    """Hex of the public key beside the signing key (what checkpoints must be signed with)."""
    from cryptography.hazmat.primitives import serialization

    pp = public_key_path()
    if not pp.exists():
        return None
    return _raw_public(serialization.load_pem_public_key(pp.read_bytes())).hex()


def _department_ids() -> list[str]:
    from govlake import metadata

    try:
        ids = set(metadata.departments())
    except Exception as exc:  # metadata errors must not stop a checkpoint being signed
        log.warning("audit: departments unknown (%s); checkpoint exported to the other witnesses", exc)
        return []
    return sorted(d for d in ids if re.fullmatch(r"[A-Za-z0-9_-]+", str(d)))


def witness_files(lake: Lake) -> list[Path]:
    """Where a new checkpoint is exported: one file per department, plus the external dirs."""
    return ([witness_root(lake) / f"{d}.jsonl" for d in _department_ids()] +
            [d / EXTERNAL_WITNESS_NAME for d in external_witness_dirs()])


def _append_record(path: Path, line: bytes) -> None:
    """Append one line durably to a checkpoint/witness file (flock, write all, fsync; a torn
    tail left by a crash is dropped first — it was never acknowledged)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size:
            tail = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                size = size - len(tail) + cut + 1 if cut != -1 else (0 if size <= len(tail) else size)
                os.ftruncate(fd, size)
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)
    if size == 0:
        fsync_dir(path.parent)


def _line_ending_at(path: Path, end: int) -> bytes:
    """The line (without newline) whose newline is the byte before offset ``end``."""
    with open(path, "rb") as fh:
        pos, buf = end - 1, b""
        while pos > 0:
            step = min(8192, pos)
            fh.seek(pos - step)
            buf = fh.read(step) + buf
            pos -= step
            idx = buf.rfind(b"\n")
            if idx != -1:
                return buf[idx + 1:]
        return buf


def _check_since_last_checkpoint(lake: Lake, last_record: bytes | None) -> None:
    """Before signing: the chain from the previous checkpoint (or the start) to the tail must be
    intact, so a signature never covers a log already known to be bad. Costs only the entries
    written since the previous checkpoint. AuditError naming the line otherwise."""
    log_ = log_path(lake)
    off, seq, prev = 0, 0, GENESIS
    try:
        rec = json.loads(last_record) if last_record else None
    except ValueError:
        rec = None
    if (isinstance(rec, dict) and rec.get("lake") == str(lake.root.resolve())
            and _check_signature(rec) and isinstance(rec.get("size"), int)):
        size = log_.stat().st_size if log_.exists() else 0
        e = None
        if 0 < rec["size"] <= size:
            try:
                e = json.loads(_line_ending_at(log_, rec["size"]))
            except ValueError:
                e = None
        if not isinstance(e, dict) or e.get("seq") != rec["count"] or e.get("hash") != rec["last_hash"]:
            raise AuditError(f"{log_}: not signing a checkpoint: the log was rewritten or truncated "
                             f"after checkpoint {rec.get('checkpoint')} signed at {rec.get('ts')}; "
                             "run `govlake audit verify`")
        off, seq, prev = rec["size"], rec["count"], rec["last_hash"]
    if not log_.exists():
        return
    with open(log_, "rb") as fh:
        fh.seek(off)
        for line in fh:
            seq += 1
            try:
                e = json.loads(line)
                bad = ("seq" if e.get("seq") != seq else "prev_hash" if e.get("prev_hash") != prev
                       else "hash" if entry_hash(e) != e.get("hash") else None)
            except (ValueError, AttributeError):
                bad = "JSON"
            if bad:
                raise AuditError(f"{log_}: not signing a checkpoint: line {seq} is not valid ({bad}: "
                                 "edited, deleted, inserted or torn); run `govlake audit verify`")
            prev = e["hash"]


def checkpoint(lake: Lake, reason: str) -> dict:
    """Sign the log's current state and hand copies to every witness; returns the record.

    A ``checkpoint`` entry is appended first (reason, who, key id, where the copies go), then
    ``{checkpoint, count, last_hash, size, ts, reason, lake}`` of that entry (``size``: the log's
    length in bytes up to it) is signed with Ed25519 and
    appended to ``audit/checkpoints.jsonl`` and to every witness file (:func:`witness_files`).
    The record also carries the public key. Refused (AuditError) if the chain written since the
    previous checkpoint is not intact; AuditError if any copy could not be written."""
    reason = str(reason).strip() or "manual"
    with _exclusive(lake):
        key = _load_or_create_key(lake)
        pub = _raw_public(key.public_key()).hex()
        key_id = hashlib.sha256(bytes.fromhex(pub)).hexdigest()[:16]
        cp = checkpoints_path(lake)
        last, _ = _last_line(cp)
        try:
            n = int(json.loads(last)["checkpoint"]) + 1 if last else 1
        except (ValueError, KeyError, TypeError):
            n = sum(1 for _ in cp.open("rb")) + 1
        _check_since_last_checkpoint(lake, last)
        targets = witness_files(lake)
        payload = {"checkpoint": n, "reason": reason, "actor": actor(), "key_id": key_id,
                   "witnesses": [str(t) for t in targets]}
        e = _commit(lake, [("checkpoint", json.loads(canonical(payload)))])[0]
        body = {"checkpoint": n, "count": e["seq"], "last_hash": e["hash"],
                "size": log_path(lake).stat().st_size, "ts": e["ts"], "reason": reason,
                "lake": str(lake.root.resolve())}
        rec = {**body, "key_id": key_id, "public_key": pub,
               "signature": key.sign(canonical(body)).hex()}
        line = canonical(rec) + b"\n"
        try:
            _append_record(cp, line)
        except OSError as exc:
            raise AuditError(f"checkpoint {n} could not be written to {cp}: {exc}") from exc
        failed = []
        for t in targets:
            try:
                _append_record(t, line)
            except OSError as exc:
                failed.append(f"{t} ({exc.strerror or exc})")
        if failed:
            raise AuditError(f"checkpoint {n} is signed and kept in {cp} but could not be "
                             f"exported to: {'; '.join(failed)}")
        return rec


def _check_signature(rec: dict) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        pk = Ed25519PublicKey.from_public_bytes(bytes.fromhex(rec["public_key"]))
        pk.verify(bytes.fromhex(rec["signature"]), canonical({k: rec[k] for k in _CHECKPOINT_SIGNED}))
        return True
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False


# ---- verification ---------------------------------------------------------------------------
@dataclass
class VerifyResult:
    ok: bool
    count: int  # entries checked and found valid
    line: int | None = None  # first bad line (1-based), None when ok or not a line
    reason: str = ""
    last_hash: str = GENESIS
    anchor_count: int | None = None
    interrupted: int = 0  # requests (begin) without an outcome (finish)
    checkpoints: int = 0  # distinct signed checkpoints found and matched
    witness_files: int = 0  # files they were read from (checkpoints.jsonl and witnesses)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.ok:
            s = f"audit log OK: {self.count} entries, chain intact, last hash {self.last_hash[:16]}…"
            if self.checkpoints:
                s += (f"; {self.checkpoints} signed checkpoint{'s' if self.checkpoints != 1 else ''} "
                      f"from {self.witness_files} file{'s' if self.witness_files != 1 else ''} match")
            if self.interrupted:
                s += (f"; {self.interrupted} request{'s' if self.interrupted != 1 else ''} "
                      "without an outcome (interrupted)")
            return s
        where = f"line {self.line}" if self.line is not None else "anchor"
        return f"audit log INVALID at {where}: {self.reason} ({self.count} entries valid before it)"


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict]], str | None]:
    """(records with their line numbers, error naming the file and line). A torn last line (no
    newline: a crash while it was written) is skipped: it was never acknowledged."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"" or (raw and not raw.endswith(b"\n")):
        lines.pop()
    out = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            return out, f"{path} line {i}: not valid JSON (edited or corrupted)"
        out.append((i, rec))
    return out, None


def _collect_checkpoints(lake: Lake) -> tuple[list[tuple[str, dict]], int, str | None]:
    """Every signed checkpoint of this lake found in checkpoints.jsonl and the witness files:
    ([(where, record)], files read, error). An error is a bad record or signature."""
    files = [checkpoints_path(lake)]
    if witness_root(lake).is_dir():
        files += sorted(witness_root(lake).glob("*.jsonl"))
    files += [d / EXTERNAL_WITNESS_NAME for d in external_witness_dirs()]
    pinned = _pinned_public_key()
    me = str(lake.root.resolve())
    out, seen_keys, nfiles = [], set(), 0
    for f in files:
        if not f.is_file():
            continue
        recs, err = _read_jsonl(f)
        if err:
            return out, nfiles, err
        used = False
        for i, rec in recs:
            where = f"{f} line {i}"
            missing = [k for k in (*_CHECKPOINT_SIGNED, "public_key", "signature") if k not in rec]
            if missing:
                return out, nfiles, f"{where}: checkpoint record lacks {missing}"
            if rec["lake"] != me:
                if f.name == EXTERNAL_WITNESS_NAME:
                    continue  # an external witness directory may serve several lakes
                return out, nfiles, (f"{where}: checkpoint {rec['checkpoint']} is for lake "
                                     f"{rec['lake']}, not {me}")
            if not _check_signature(rec):
                return out, nfiles, (f"{where}: checkpoint {rec.get('checkpoint')} signed at "
                                     f"{rec.get('ts')} has a bad signature (forged or edited)")
            if pinned is not None and rec["public_key"] != pinned:
                return out, nfiles, (f"{where}: checkpoint {rec['checkpoint']} is signed by key "
                                     f"{rec['public_key'][:16]}…, not the audit key "
                                     f"{pinned[:16]}… in {public_key_path()} (forged)")
            seen_keys.add(rec["public_key"])
            out.append((where, rec))
            used = True
        nfiles += used
    if pinned is None and len(seen_keys) > 1:
        return out, nfiles, (f"checkpoints are signed by {len(seen_keys)} different keys and no "
                             f"public key is pinned at {public_key_path()}")
    return out, nfiles, None


def _catalog_anchor(lake: Lake) -> dict | None:
    p = lake.catalog_json
    try:
        a = json.loads(p.read_text(encoding="utf-8")).get("audit_anchor")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(a, dict) and isinstance(a.get("count"), int) and a.get("count", 0) > 0:
        return a
    return None


def verify(lake: Lake) -> VerifyResult:
    """Check the whole chain, then every anchor and witness copy against it (read-only)."""
    log_ = log_path(lake)
    def snapshot():
        return (log_.stat().st_size if log_.exists() else 0), _read_head(lake)

    try:
        with _flock(lake, fcntl.LOCK_SH):  # a consistent (log size, head) pair, not mid-batch
            size, head = snapshot()
    except OSError:  # a read-only copy of the lake (e.g. handed to an auditor): no lock
        size, head = snapshot()
    raw = b""
    if size:
        with open(log_, "rb") as fh:
            raw = fh.read(size)
    return _verify(lake, raw, head)


def _verify(lake: Lake, raw: bytes, head: dict | None | bool = False) -> VerifyResult:
    if head is False:
        head = _read_head(lake)
    anchor = head.get("count") if head else None
    if head and head.get("corrupt"):
        return VerifyResult(False, 0, None, f"{head_path(lake)} is not valid JSON", anchor_count=None)
    cps, nfiles, cp_err = _collect_checkpoints(lake)
    cat = _catalog_anchor(lake)
    # seq -> [(description, expected hash)] for every anchor copy
    want: dict[int, list[tuple[str, str]]] = {}
    for where, rec in cps:
        want.setdefault(rec["count"], []).append(
            (f"checkpoint {rec['checkpoint']} signed at {rec['ts']} ({where})", rec["last_hash"]))
    if cat:
        want.setdefault(cat["count"], []).append(
            (f"the anchor in {lake.catalog_root / 'catalog.json'}", cat.get("last_hash")))

    lines = raw.split(b"\n")
    torn = bool(raw) and not raw.endswith(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev = GENESIS
    open_req: dict[int, str] = {}
    mismatch = None
    for i, line in enumerate(lines, start=1):
        if torn and i == len(lines):
            return VerifyResult(False, i - 1, i, f"incomplete last line ({len(line)} bytes: torn or "
                                "truncated write); run `govlake audit repair` to seal it",
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
        kind = e["kind"]
        if kind == "request":
            open_req[i] = e["hash"]
        elif kind == "outcome":
            p = e["payload"] if isinstance(e["payload"], dict) else {}
            s = p.get("intent_seq")
            if open_req.get(s) is None or open_req[s] != p.get("intent_hash"):
                return VerifyResult(False, i - 1, i, f"outcome for request {s!r} which is not an open "
                                    "request with that hash (no such request, or a second outcome)",
                                    prev, anchor)
            del open_req[s]
        if mismatch is None and i in want:
            for desc, h in want[i]:
                if h != e["hash"]:
                    mismatch = (i, desc)
                    break
        prev = e["hash"]
    n = len(lines)
    if cp_err:
        return VerifyResult(False, n, None, cp_err, prev, anchor)
    if head is None:
        if n:
            return VerifyResult(False, n, None, f"{head_path(lake)} is missing but the log has {n} "
                                "entries (anchor deleted)", prev, None)
    else:
        if anchor > n:
            return VerifyResult(False, n, n + 1, f"the anchor records {anchor} entries but the log has "
                                f"{n} (entries removed from the end: truncated)", prev, anchor)
        if anchor >= 1:
            e = json.loads(lines[anchor - 1])
            if e["hash"] != head.get("last_hash"):
                return VerifyResult(False, anchor - 1, anchor, "the entry at the anchor's count does "
                                    "not carry the anchor's last hash (log rewritten)", prev, anchor)
    beyond = [(c, d) for c, ds in want.items() if c > n for d, _ in ds]
    if beyond:
        c, desc = max(beyond)
        what = "deleted" if n == 0 else "truncated or rewritten"
        return VerifyResult(False, n, None, f"the log has {n} entries but {desc} records {c} "
                            f"(log {what}{' together with head.json' if head is None else ''})",
                            prev, anchor)
    if mismatch:
        i, desc = mismatch
        return VerifyResult(False, i - 1, i, f"log rewritten after {desc}: entry {i} no longer "
                            "carries the hash it signed", prev, anchor)
    distinct = {(r["count"], r["last_hash"]) for _, r in cps}
    return VerifyResult(True, n, last_hash=prev, anchor_count=anchor, interrupted=len(open_req),
                        checkpoints=len(distinct), witness_files=nfiles)


# ---- typed helpers ----------------------------------------------------------------------
def actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry
        return str(os.getuid())


def record_publication(lake: Lake, manifest: dict, gate: dict | None = None, *,
                       sign: bool = True) -> dict:
    """Record a publication: product, version, SHA-256 of each file, input deliveries, gate;
    then (unless ``sign`` is false) sign a checkpoint of the log (:func:`checkpoint`) so
    witnesses hold its state. The publisher records before ``current`` switches with
    ``sign=False`` and signs once the run's publications are live.

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
    entry = append(lake, "publication", payload)
    if sign:
        checkpoint(lake, f"publication {payload['product']} v{payload['version']}")
    return entry


def head(lake: Lake) -> dict | None:
    return _read_head(lake)
