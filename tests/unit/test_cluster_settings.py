"""`govlake cluster` runs the deployment of docker-compose.yml as local processes: its Airflow
environment (govlake.ops.cluster.cluster_env) must say what compose's ``x-airflow-common``
environment says — same executor, same kinds of DB/broker/result URLs, same Execution API path,
same folders and GOVLAKE_* keys, same telemetry switches. Hosts and ports differ by design
(127.0.0.1 and free ports instead of service names); the auth manager is the one documented
difference (simple instead of FAB)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from govlake import config
from govlake.ops import cluster

ROOT = Path(__file__).resolve().parents[2]
# keys whose values are per-deployment: secrets, interpolated from .env in compose, generated here
SECRETS = {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"}
URLS = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "GOVLAKE_STATE_DB"}
# compose paths under /opt/govlake -> the checkout
PATHS = {"GOVLAKE_PROJECT_ROOT": "", "GOVLAKE_LAKE_ROOT": None, "GOVLAKE_WORK_DIR": None,
         "AIRFLOW__CORE__DAGS_FOLDER": "dags", "AIRFLOW__CORE__PLUGINS_FOLDER": "plugins",
         "PYTHONPATH": "plugins", "DBT_PROJECT_DIR": "dbt_project", "DBT_PROFILES_DIR": "dbt_project"}
DIFFERENT_ON_PURPOSE = {"AIRFLOW__CORE__AUTH_MANAGER"}


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {k: str(v) for k, v in doc["x-airflow-common"]["environment"].items()}


@pytest.fixture()
def env(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.delenv("AIRFLOW_WORKER_CONCURRENCY", raising=False)
    c = cluster.Cluster.at(tmp_path / "state")
    c.assign_ports(postgres=15432, redis=16379, api=18080)
    return c.env("worker1")


def test_every_compose_setting_is_in_the_cluster_env(compose_env, env):
    missing = sorted(set(compose_env) - set(env))
    assert not missing, f"docker-compose.yml x-airflow-common sets {missing}; cluster_env() does not"


def test_same_values_where_the_deployment_does_not_change_them(compose_env, env):
    same = set(compose_env) - SECRETS - URLS - set(PATHS) - DIFFERENT_ON_PURPOSE
    same.discard("AIRFLOW__CELERY__WORKER_CONCURRENCY")
    diff = {k: (compose_env[k], env[k]) for k in sorted(same) if compose_env[k] != env[k]}
    assert not diff, f"compose value vs cluster value: {diff}"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # ${AIRFLOW_WORKER_CONCURRENCY:-4}: the same default
    assert compose_env["AIRFLOW__CELERY__WORKER_CONCURRENCY"].endswith(":-4}")
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "4"


@pytest.mark.parametrize("key", sorted(URLS))
def test_same_kind_of_url_on_loopback(compose_env, env, key):
    want, got = urlsplit(compose_env[key]), urlsplit(env[key])
    assert got.scheme == want.scheme, f"{key}: {env[key]!r} vs compose {compose_env[key]!r}"
    assert got.path == want.path, f"{key}: path {got.path!r} vs compose {want.path!r}"
    assert got.hostname == "127.0.0.1", f"{key} must stay on loopback: {env[key]!r}"
    if want.username:
        assert got.username == want.username


def test_urls_point_at_the_cluster_ports(env):
    assert urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).port == 15432
    assert urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"]).port == 15432
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).port == 16379
    assert urlsplit(env["GOVLAKE_STATE_DB"]).port == 15432
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"


def test_the_ledger_lives_in_the_clusters_postgres(compose_env, env):
    """Extract tasks on both workers write one ledger: a database of the cluster's Postgres, with
    the metadata DB's user and password, not the SQLite file of the embedded default."""
    from govlake import ledger

    url = urlsplit(ledger.state_db_url(env["GOVLAKE_STATE_DB"]))
    meta = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (url.scheme, url.path) == ("postgresql", f"/{cluster.STATE_DB_NAME}")
    assert (url.username, url.password, url.port) == (meta.username, meta.password, meta.port)
    assert urlsplit(compose_env["GOVLAKE_STATE_DB"]).path == url.path


def test_same_folders_and_govlake_keys(compose_env, env):
    assert {k for k in compose_env if k.startswith("GOVLAKE_")} <= {k for k in env if k.startswith("GOVLAKE_")}
    root = config.project_root()
    for key, rel in PATHS.items():
        want = compose_env[key]
        if rel is None:  # lake and work dir: the same relation to the project root as in compose
            assert env[key] == str(config.lake_root() if key == "GOVLAKE_LAKE_ROOT" else config.work_dir())
            continue
        assert want == f"/opt/govlake/{rel}".rstrip("/"), (key, want)
        got = env[key].split(":")[0]
        assert got == str(root / rel).rstrip("/") if rel else got == str(root), (key, env[key])


def test_secrets_are_shared_and_generated_once(tmp_path, env):
    c = cluster.Cluster.at(tmp_path / "state")
    assert all(env[k] for k in SECRETS)
    again = c.env("scheduler")
    assert {k: again[k] for k in SECRETS} == {k: env[k] for k in SECRETS}
    assert oct(c.secrets_file.stat().st_mode & 0o777) == "0o600"


def test_two_workers_differ_only_in_their_node_name_and_log_port(tmp_path):
    c = cluster.Cluster.at(tmp_path / "state")
    c.assign_ports()
    w1, w2 = c.env("worker1"), c.env("worker2")
    diff = {k for k in set(w1) | set(w2) if w1.get(k) != w2.get(k)}
    assert diff == {"GOVLAKE_CLUSTER_NODE", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"}
    assert len(set(c.ports.values())) == len(c.ports), c.ports
