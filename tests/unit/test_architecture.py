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


def test_layer_contracts_are_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT / "plugins")),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 kept, 0 broken" in r.stdout, r.stdout


def test_the_generator_may_not_be_imported_by_the_runtime(tmp_path):
    """The synthetic generator is test/demo data: a runtime module importing it is refused."""
    r = _lint_copy(tmp_path, "govlake/ingest.py", "\nfrom govlake_synth import generate  # runtime -> test data\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "govlake.ingest -> govlake_synth.generate" in r.stdout, r.stdout


def _lint_copy(tmp_path: Path, module: str, extra: str) -> subprocess.CompletedProcess:
    """lint-imports on a copy of the packages where ``module`` gets the line ``extra``."""
    pkg = tmp_path / "plugins"
    for name in ("govlake", "govlake_synth"):
        shutil.copytree(ROOT / "plugins" / name, pkg / name,
                        ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    f = pkg / module
    f.write_text(f.read_text("utf-8") + extra, "utf-8")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text("utf-8"), "utf-8")
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache"], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(pkg)),
                          capture_output=True, text=True, timeout=300)


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The check can fail: a copy of the package where ops imports the site is refused."""
    r = _lint_copy(tmp_path, "govlake/ops/tasks.py", "\nfrom govlake import site  # upward\n")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "govlake.ops.tasks -> govlake.site" in r.stdout, r.stdout
