"""The layers declared in pyproject.toml ([tool.importlinter]) hold: `lint-imports` exits 0.

A module that imports from a layer above it (say ``govlake.ops`` importing ``govlake.site``, the
cycle ops -> catalog -> dashboard -> ops this replaced) breaks a contract and fails here, naming
the import and its line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(cwd: Path, config: Path | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe), "--no-cache"] + (["--config", str(config)] if config else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_layer_contracts_are_kept():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "layers" in r.stdout, r.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The check can fail: a copy of the package where ops imports the site is refused."""
    pkg = tmp_path / "plugins"
    shutil.copytree(ROOT / "plugins" / "govlake", pkg / "govlake",
                    ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    tasks = pkg / "govlake" / "ops" / "tasks.py"
    tasks.write_text(tasks.read_text("utf-8") + "\nfrom govlake import site  # upward\n", "utf-8")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text("utf-8"), "utf-8")
    exe = Path(sys.executable).with_name("lint-imports")
    env = dict(os.environ, PYTHONPATH=str(pkg))
    r = subprocess.run([str(exe), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "govlake.ops.tasks -> govlake.site" in r.stdout, r.stdout
