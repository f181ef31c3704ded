"""Shared fixtures. Tests never touch ./lake: each gets its own lake root under tmp."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from govlake import config
from govlake.storage import Lake

# The embedded Airflow for tests lives in one session-wide home (created once).
_SESSION_HOME = Path(os.environ.get("GOVLAKE_TEST_WORK", config.project_root() / ".work" / "test"))


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    """An empty lake in a temporary folder, with GOVLAKE_LAKE_ROOT pointing at it."""
    root = tmp_path / "lake"
    monkeypatch.setenv("GOVLAKE_LAKE_ROOT", str(root))
    return Lake(root).ensure()


@pytest.fixture(scope="session")
def airflow_env():
    """Environment for an embedded Airflow (SQLite DB under .work/test/airflow)."""
    home = _SESSION_HOME / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = config.airflow_env(home)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
