"""What govlake writes is private to its OS user, even when the caller's umask is the usual 022:
the lake root is 0700 and no file or folder below it (or among the keys) has group/other bits."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

GOVLAKE = str(Path(sys.executable).with_name("govlake"))

SCRIPT = """
from govlake import audit, masking
from govlake.sharing.service.identity import Registry, private_file
from govlake.storage import Lake
from govlake import config
lake = Lake.default().ensure()
audit.append(lake, "note", {"x": 1})
masking.ensure_local_key()
Registry(lake.meta_root / "service" / "clients.sqlite").add("a-app", kind="app", role="r", department="d", name="n")
private_file(config.work_dir() / "secrets" / "service-jwt.key")
"""


def _loose(root: Path) -> list[str]:
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            if p.stat().st_mode & 0o077:
                bad.append(f"{p} {stat.filemode(p.stat().st_mode)}")
    return bad


def test_lake_and_keys_are_private(tmp_path):
    env = {**os.environ, "GOVLAKE_LAKE_ROOT": str(tmp_path / "lake"), "GOVLAKE_WORK_DIR": str(tmp_path / "work")}
    env.pop("GOVLAKE_TOKEN_KEY", None)
    env.pop("GOVLAKE_TOKEN_KEY_FILE", None)
    old = os.umask(0o022)  # the usual umask of an operator's shell
    try:
        subprocess.run([GOVLAKE, "generate", "--people", "30", "--date", "2026-11-20"], env=env, check=True,
                       capture_output=True, timeout=300)
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, capture_output=True, timeout=120)
    finally:
        os.umask(old)
    lake = tmp_path / "lake"
    assert stat.S_IMODE(lake.stat().st_mode) == 0o700
    assert list((lake / "landing").rglob("*.*")), "generate wrote no landing file"
    assert _loose(lake) == []
    assert _loose(tmp_path / "work") == []
