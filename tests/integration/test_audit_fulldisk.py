"""The audit log on a full disk: an append that cannot be written completely fails loudly
(AuditError), leaves no torn tail, and appends work again once space is freed.

A real 64 KiB tmpfs when the tests run as root and may mount; otherwise (and always, in
addition) ENOSPC simulated by an ``os.write`` that writes part of the buffer then fails."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from govlake import audit
from govlake.storage import Lake


@pytest.fixture(autouse=True)
def _own_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GOVLAKE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv(audit.WITNESS_ENV, raising=False)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a 64 KiB tmpfs needs root to mount (uid %d); the simulated ENOSPC test "
                    "covers the same path" % os.geteuid())
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip() or p.returncode}); the "
                    "simulated ENOSPC test covers the same path")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill_disk(root: Path) -> Path:
    filler = root / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(b"\0" * 1024)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def test_real_full_disk(small_disk, monkeypatch):
    lake = Lake(small_disk / "lake").ensure()
    for i in range(3):
        audit.append(lake, "note", {"i": i, "text": f"第{i}条"})
    size = audit.log_path(lake).stat().st_size
    filler = _fill_disk(small_disk)
    big = {"text": "数据共享审计" * 700}  # ~12.6 KB as UTF-8: cannot fit in what is left
    real, results = os.write, []

    def spy(fd, data):  # the real write; only records what the kernel returned
        try:
            n = real(fd, data)
        except OSError as exc:
            results.append(exc.errno)
            raise
        results.append(n)
        return n

    with monkeypatch.context() as m:
        m.setattr(os, "write", spy)
        with pytest.raises(audit.AuditError, match="No space left on device.*nothing was recorded"):
            audit.append(lake, "note", big)
    # what the old code did not handle: the kernel wrote part of the line, then refused
    assert results[-1] == errno.ENOSPC and any(isinstance(r, int) and 0 < r < 12_000 for r in results[:-1]), results
    assert audit.log_path(lake).stat().st_size == size  # cut back: no torn tail
    res = audit.verify(lake)
    assert res.ok and res.count == 3, str(res)
    filler.unlink()  # space is freed
    e = audit.append(lake, "note", big)
    assert e["seq"] == 4 and audit.entries(lake)[-1]["payload"] == big
    res = audit.verify(lake)
    assert res.ok and res.count == 4, str(res)


def _partial_then_enospc(real_write, fail_after: int):
    """An os.write that writes ``fail_after`` bytes of the first big buffer, then ENOSPC."""
    state = {"written": 0}

    def fake(fd, data):
        if len(data) < 200 and state["written"] == 0:  # not the log line (e.g. pytest output)
            return real_write(fd, data)
        if state["written"] == 0:
            state["written"] = real_write(fd, bytes(data[:fail_after]))
            return state["written"]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return fake


def test_simulated_full_disk(lake, monkeypatch):
    for i in range(3):
        audit.append(lake, "note", {"i": i})
    size = audit.log_path(lake).stat().st_size
    payload = {"text": "x" * 3900}  # ~4,001 bytes as the measured case
    with monkeypatch.context() as m:
        m.setattr(os, "write", _partial_then_enospc(os.write, 1191))
        with pytest.raises(audit.AuditError, match="No space left on device.*nothing was recorded"):
            audit.append(lake, "note", payload)
    assert audit.log_path(lake).stat().st_size == size
    assert audit.verify(lake).ok and audit.verify(lake).count == 3
    e = audit.append(lake, "note", payload)  # space "freed": the same append works
    assert e["seq"] == 4 and audit.verify(lake).ok


def test_short_writes_are_completed(lake, monkeypatch):
    """A write that returns fewer bytes than asked (allowed by POSIX) is continued, not lost."""
    real = os.write

    def dribble(fd, data):
        return real(fd, bytes(data[:7]))

    with monkeypatch.context() as m:
        m.setattr(os, "write", dribble)
        e = audit.append(lake, "note", {"text": "短写" * 50})
    assert audit.entries(lake) == [e] and audit.verify(lake).ok


def test_fsync_failure_cuts_back(lake, monkeypatch):
    audit.append(lake, "note", {"i": 0})
    size = audit.log_path(lake).stat().st_size

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", eio)
        with pytest.raises(audit.AuditError, match="Input/output error"):
            audit.append(lake, "note", {"i": 1})
    assert audit.log_path(lake).stat().st_size == size and audit.verify(lake).ok


def test_torn_tail_left_when_cutting_back_fails_too_then_repair(lake, monkeypatch):
    """The worst case: the write fails half-way and so does the truncate. The error says so,
    verify names the torn line, append refuses, and repair seals it."""
    for i in range(2):
        audit.append(lake, "note", {"i": i})

    def no_truncate(fd, n):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with monkeypatch.context() as m:
        m.setattr(os, "write", _partial_then_enospc(os.write, 100))
        m.setattr(os, "ftruncate", no_truncate)
        with pytest.raises(audit.AuditError, match="torn tail may be left.*govlake audit repair"):
            audit.append(lake, "note", {"text": "y" * 1000})
    res = audit.verify(lake)
    assert not res.ok and res.line == 3 and "incomplete last line (100 bytes" in res.reason
    with pytest.raises(audit.AuditError, match="govlake audit repair"):
        audit.append(lake, "note", {})
    rep = audit.repair(lake)
    assert rep["payload"]["torn_bytes"] == 100 and rep["seq"] == 3
    assert audit.verify(lake).ok
    assert [e["kind"] for e in audit.entries(lake)] == ["note", "note", "repair"]
