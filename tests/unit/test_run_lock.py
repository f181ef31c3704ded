"""The lake-level run lock of ``govlake run`` (runner.run_lock): one run per lake at a time.

A holder is a real separate process (the lock is an ``flock`` on ``_meta/locks/run.lock``, so
the kernel is the referee); a second acquisition refuses at once naming the holder's pid and
command, ``--wait`` blocks until the holder is gone, and a SIGKILLed holder leaves no stale lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from govlake import cli, runner
from govlake.storage import Lake

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from govlake import runner
    from govlake.storage import Lake
    with runner.run_lock(Lake(Path(sys.argv[1])), argv=["govlake", "run", "--date", "2026-11-25"]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _start_holder(lake: Lake, seconds: float = 60.0) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lake.root), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        raise AssertionError(f"holder did not take the lock: {line!r} {proc.stderr.read()}")
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_second_acquisition_refuses_naming_the_holder(lake):
    holder = _start_holder(lake)
    try:
        t0 = time.monotonic()
        with pytest.raises(runner.LakeBusy) as exc:
            with runner.run_lock(lake):
                pass
        assert time.monotonic() - t0 < 2, "the second run must refuse at once, not wait"
        msg = str(exc.value)
        assert f"pid {holder.pid}" in msg
        assert str(lake.root) in msg
        assert "govlake run --date 2026-11-25" in msg and "--wait" in msg
        assert exc.value.exit_code == 75
        info = json.loads(runner.run_lock_path(lake).read_text(encoding="utf-8"))
        assert info["pid"] == holder.pid and info["argv"][:2] == ["govlake", "run"]
        assert {"host", "user", "started_at"} <= set(info)
    finally:
        _kill(holder)


def test_sigkilled_holder_leaves_no_stale_lock(lake):
    holder = _start_holder(lake)
    _kill(holder)
    with runner.run_lock(lake) as info:  # free at once: the kernel released the flock
        assert info["pid"] == os.getpid()
        on_disk = json.loads(runner.run_lock_path(lake).read_text(encoding="utf-8"))
        assert on_disk["pid"] == os.getpid()
    # released on exit: another process can take it
    again = _start_holder(lake, seconds=0.1)
    again.wait(timeout=10)
    assert again.returncode == 0


def test_wait_blocks_until_the_holder_is_done(lake):
    holder = _start_holder(lake, seconds=1.5)
    try:
        t0 = time.monotonic()
        with runner.run_lock(lake, wait=True) as info:
            waited = time.monotonic() - t0
            assert info["pid"] == os.getpid()
        assert holder.wait(timeout=10) == 0
        assert waited > 0.5, f"acquired after {waited:.2f}s while another process held the lock"
    finally:
        _kill(holder)


def test_cli_run_exits_75_with_a_clear_message(lake, capsys):
    holder = _start_holder(lake)
    try:
        rc = cli.main(["run", "--date", "2026-11-25"])
        err = capsys.readouterr().err
        assert rc == 75, err
        assert f"another govlake run holds the lake {lake.root}: pid {holder.pid}" in err
        assert "Traceback" not in err and "sqlalchemy" not in err.lower()
    finally:
        _kill(holder)
