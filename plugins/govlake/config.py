"""Where things are: project root, lake root, dbt project, embedded Airflow settings.

Every command and DAG reads the lake root from ``GOVLAKE_LAKE_ROOT`` (default ``./lake``
relative to the project root). The embedded Airflow lives in ``.work/airflow``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    return Path(os.environ.get("GOVLAKE_PROJECT_ROOT", PROJECT_ROOT)).resolve()


def lake_root() -> Path:
    raw = os.environ.get("GOVLAKE_LAKE_ROOT")
    root = Path(raw) if raw else project_root() / "lake"
    if not root.is_absolute():
        root = project_root() / root
    return root.resolve()


def work_dir() -> Path:
    return Path(os.environ.get("GOVLAKE_WORK_DIR", project_root() / ".work")).resolve()


def dbt_project_dir() -> Path:
    return project_root() / "dbt_project"


def expectations_dir() -> Path:
    return project_root() / "expectations"


def dags_dir() -> Path:
    return project_root() / "dags"


def airflow_env(airflow_home: Path | None = None) -> dict[str, str]:
    """Environment for the embedded Airflow: SQLite metadata DB, no examples, no network."""
    home = Path(airflow_home or os.environ.get("AIRFLOW_HOME") or work_dir() / "airflow")
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_dir()),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root() / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # a 2-core machine: a few tasks at a time
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE": "False",
        # nothing reaches the network
        "SCARF_ANALYTICS": "false",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "DO_NOT_TRACK": "true",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "GX_ANALYTICS_ENABLED": "False",
        "GE_USAGE_STATISTICS_URL": "",
        "PYTHONPATH": os.pathsep.join(
            p for p in [str(project_root() / "plugins"), os.environ.get("PYTHONPATH", "")] if p
        ),
    }


def full_env() -> dict[str, str]:
    env = {
        "GOVLAKE_PROJECT_ROOT": str(project_root()),
        "GOVLAKE_LAKE_ROOT": str(lake_root()),
        "DBT_PROFILES_DIR": str(dbt_project_dir()),
        "DBT_PROJECT_DIR": str(dbt_project_dir()),
    }
    env.update(airflow_env())
    return env


def apply_env(overwrite: bool = False) -> dict[str, str]:
    """Put the govlake/Airflow environment into os.environ (before importing airflow)."""
    env = full_env()
    for k, v in env.items():
        if overwrite or k not in os.environ or k == "PYTHONPATH":
            os.environ[k] = v
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env
