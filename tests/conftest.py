"""Shared fixtures. Tests never touch ./lake: each gets its own lake root under tmp."""

from __future__ import annotations

import pytest

from govlake import config
from govlake.storage import Lake



@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    """An empty lake in a temporary folder, with GOVLAKE_LAKE_ROOT pointing at it."""
    root = tmp_path / "lake"
    monkeypatch.setenv("GOVLAKE_LAKE_ROOT", str(root))
    return Lake(root).ensure()


@pytest.fixture(scope="session")
def airflow_env():
    """The embedded Airflow (SQLite under $AIRFLOW_HOME, default .work/airflow), migrated once.

    Airflow reads its configuration once per process, so all tests share one home."""
    from govlake import runner

    env = config.apply_env()
    runner.ensure_airflow_db()
    return env
