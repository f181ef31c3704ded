"""The multi-node deployment (docker-compose.yml + docker/Dockerfile) is complete and
consistent with the embedded default.

There is no Docker engine here, so the file is parsed with PyYAML (``safe_load`` resolves the
``<<`` merge keys of the ``x-airflow-common`` anchor the way compose does) and ``${VAR...}``
is interpolated by a small re-implementation of compose's rules. Each assertion names the
service and what it lacks.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from govlake import config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "flower",
}
# long-running Airflow services and the `airflow ...` command each must run
AIRFLOW_COMMANDS = {
    "airflow-apiserver": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
    "airflow-worker": ["airflow", "celery", "worker"],
    "flower": ["airflow", "celery", "flower"],
}
# services that run their image's default command; the compose file must say so
IMAGE_DEFAULT_COMMAND = {"postgres", "redis"}
OPTIONAL_PROFILES = {"flower": "flower"}

# values a user of `docker compose` would put in .env (see docker/env.example)
TEST_ENV = {
    "AIRFLOW_FERNET_KEY": "test-fernet-key",
    "AIRFLOW_JWT_SECRET": "test-jwt-secret",
    "AIRFLOW_API_SECRET_KEY": "test-api-secret",
    "GOVLAKE_ADMIN_PASSWORD": "test-admin-password",
}
SHARED_SECRETS = (
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
)
# settings that must be identical on every Airflow service
SHARED_SETTINGS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "GOVLAKE_PROJECT_ROOT",
    "GOVLAKE_LAKE_ROOT",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    *SHARED_SECRETS,
)
# embedded-default settings (govlake.config.airflow_env) the deployment must keep as they are
SAME_AS_EMBEDDED = (
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "SCARF_ANALYTICS",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED",
    "DO_NOT_TRACK",
    "DBT_SEND_ANONYMOUS_USAGE_STATS",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY",
    "GX_ANALYTICS_ENABLED",
    "AIRFLOW__API__EXPOSE_CONFIG",
)
DEPLOY_ONLY_PACKAGES = (
    "apache-airflow-providers-celery",
    "apache-airflow-providers-postgres",
    "psycopg2-binary",
    "redis",
)


# ---- helpers ------------------------------------------------------------------------------
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, env: dict[str, str], where: str):
    """Compose's interpolation: $$ -> $, ${V}, ${V:-default}, ${V-default}, ${V:?err}, ${V?err}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        val = env.get(name)
        if op in (":-", ":?"):
            missing = not val
        else:
            missing = val is None
        if not missing:
            return val
        if op and op.endswith("?"):
            raise AssertionError(f"{where}: required variable {name} is unset ({arg})")
        return arg if op else ""

    return _VAR_RE.sub(sub, value)


def load_compose(env: dict[str, str] | None = None) -> dict:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return interpolate(raw, dict(TEST_ENV if env is None else env), "docker-compose.yml")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_of(service: dict) -> list[str]:
    cmd = service.get("command")
    if cmd is None:
        return []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def mounts_of(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) for each volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            src, dst = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            src, dst, ro = v.get("source", ""), v["target"], bool(v.get("read_only"))
        out.append((src, dst, ro))
    return out


def bind_source(mounts, host_dir: str) -> list[tuple[str, str, bool]]:
    want = (ROOT / host_dir).resolve()
    return [m for m in mounts if m[0].startswith((".", "/")) and (ROOT / m[0]).resolve() == want]


def container_port(service: dict, default: int | None = None) -> set[int]:
    ports = set()
    for p in service.get("ports") or []:
        ports.add(int(str(p).split(":")[-1].split("/")[0]) if not isinstance(p, dict) else int(p["target"]))
    for p in service.get("expose") or []:
        ports.add(int(str(p).split("/")[0]))
    return ports


def truthy(v: str) -> bool:
    return str(v).strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="module")
def compose() -> dict:
    assert COMPOSE_FILE.is_file(), "docker-compose.yml is missing at the project root"
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# ---- the services exist ------------------------------------------------------------------
def test_expected_services_present(services):
    missing = ({"postgres", "redis"} | AIRFLOW_SERVICES) - set(services)
    assert not missing, f"docker-compose.yml lacks services: {sorted(missing)}"
    for name, svc in services.items():
        profiles = svc.get("profiles") or []
        if name in OPTIONAL_PROFILES:
            assert OPTIONAL_PROFILES[name] in profiles, f"{name}: must be optional (profile {OPTIONAL_PROFILES[name]!r})"
        else:
            assert not profiles, f"{name}: core service must start with plain `docker compose up`, has profiles {profiles}"


def test_every_service_has_image_or_build(services):
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: has neither image nor build"
        build = svc.get("build")
        if build:
            ctx = ROOT / (build["context"] if isinstance(build, dict) else build)
            assert ctx.is_dir(), f"{name}: build context {ctx} does not exist"
            dockerfile = ctx / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} does not exist"
    for name in AIRFLOW_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict) and build.get("dockerfile") == "docker/Dockerfile", (
            f"{name}: must be built from docker/Dockerfile (govlake + pinned deps baked in), got build={build!r}"
        )


def test_every_service_has_a_command(services):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name, svc in services.items():
        cmd = command_of(svc)
        if name in IMAGE_DEFAULT_COMMAND:
            # the image's default command, which the file must document in the service block
            block = re.search(rf"^  {re.escape(name)}:\n((?:    .*\n|\s*\n)+)", text, re.M)
            assert cmd or (block and "# command: the image default" in block.group(1)), (
                f"{name}: no command and no '# command: the image default' comment documenting it"
            )
        elif name == "airflow-init":
            script = " ".join(cmd)
            assert svc.get("entrypoint"), "airflow-init: needs an entrypoint (a shell) to run its script"
            for step in ("airflow db migrate", "airflow users create", "Lake.default().ensure()"):
                assert step in script, f"airflow-init: its command does not run `{step}`"
        elif name == "govlake-sharing":
            # the sharing service runs `govlake serve` and, inside its container, must listen beyond
            # loopback explicitly (published on the host's loopback only)
            assert cmd[:2] == ["govlake", "serve"] and "--allow-remote" in cmd, f"{name}: command {cmd}"
            assert all(str(p).startswith("127.0.0.1:") for p in svc.get("ports", [])), f"{name}: {svc.get('ports')}"
            # it holds the keys in its own volume, which no Airflow service mounts
            secrets = [v for v in svc["volumes"] if v.startswith("govlake-service-secrets:")]
            assert secrets, f"{name}: needs its own secrets volume"
            for other in AIRFLOW_SERVICES:
                assert not [v for v in services[other].get("volumes", []) if str(v).startswith("govlake-service-secrets:")]
        else:
            assert name in AIRFLOW_COMMANDS, f"{name}: unknown service, add it to the test's expectations"
            assert cmd == AIRFLOW_COMMANDS[name], f"{name}: command {cmd} should be {AIRFLOW_COMMANDS[name]}"


# ---- environment -------------------------------------------------------------------------
def test_airflow_services_share_executor_db_broker_and_secrets(services):
    envs = {name: env_of(services[name]) for name in AIRFLOW_SERVICES}
    for key in SHARED_SETTINGS:
        lacking = sorted(n for n, e in envs.items() if not e.get(key))
        assert not lacking, f"services {lacking} lack {key}"
        values = {n: e[key] for n, e in envs.items()}
        assert len(set(values.values())) == 1, f"{key} differs across Airflow services: {values}"
    for name, env in envs.items():
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", f"{name}: executor is not CeleryExecutor"


def test_secrets_come_from_required_variables():
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    for name in AIRFLOW_SERVICES:
        env = env_of(raw["services"][name])
        for key in SHARED_SECRETS:
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", env.get(key, "")), (
                f"{name}: {key} must be a required ${{VAR:?...}} so an empty secret never starts, got {env.get(key)!r}"
            )
    with pytest.raises(AssertionError, match="AIRFLOW_JWT_SECRET"):
        load_compose({k: v for k, v in TEST_ENV.items() if k != "AIRFLOW_JWT_SECRET"})


def test_urls_point_at_services_that_exist(services):
    pg_env = env_of(services["postgres"])
    env = env_of(services["airflow-scheduler"])

    db = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert db.scheme == "postgresql+psycopg2", f"airflow services: metadata DB scheme is {db.scheme}"
    result = urlsplit(env["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert result.scheme == "db+postgresql", f"airflow services: Celery result backend scheme is {result.scheme}"
    for label, url in (("SQL_ALCHEMY_CONN", db), ("RESULT_BACKEND", result)):
        assert url.hostname in services, f"{label}: host {url.hostname!r} is not a service"
        assert url.hostname == "postgres", f"{label}: should use the postgres service, uses {url.hostname}"
        assert url.username == pg_env["POSTGRES_USER"], f"{label}: user {url.username} is not POSTGRES_USER"
        assert url.password == pg_env["POSTGRES_PASSWORD"], f"{label}: password differs from postgres' POSTGRES_PASSWORD"
        assert url.path.lstrip("/") == pg_env["POSTGRES_DB"], f"{label}: database {url.path} is not POSTGRES_DB"
        assert (url.port or 5432) == 5432, f"{label}: port {url.port} is not postgres' 5432"

    broker = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"])
    assert broker.scheme == "redis", f"BROKER_URL scheme is {broker.scheme}"
    assert broker.hostname == "redis" and broker.hostname in services, f"BROKER_URL host {broker.hostname!r} is not the redis service"
    assert (broker.port or 6379) in container_port(services["redis"]) | {6379}, f"BROKER_URL port {broker.port}"


def test_workers_reach_the_execution_api(services):
    api_services = [n for n, s in services.items() if command_of(s)[-1:] == ["api-server"]]
    assert api_services == ["airflow-apiserver"], f"exactly one api-server expected, got {api_services}"
    api_ports = container_port(services["airflow-apiserver"])
    for name in ("airflow-worker", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        url = env_of(services[name]).get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
        parts = urlsplit(url)
        assert parts.hostname == "airflow-apiserver", f"{name}: EXECUTION_API_SERVER_URL {url!r} does not name the api-server service"
        assert parts.port in api_ports, f"{name}: EXECUTION_API_SERVER_URL port {parts.port} is not the api-server's {api_ports}"
        assert parts.path == "/execution/", f"{name}: EXECUTION_API_SERVER_URL path must be /execution/, got {parts.path!r}"


def test_settings_match_the_embedded_default(services):
    embedded = config.airflow_env(Path("/nonexistent-airflow-home"))
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        for key in SAME_AS_EMBEDDED:
            assert key in env, f"{name}: lacks {key} (the embedded default sets {embedded.get(key)!r})"
            if key in embedded and embedded[key].lower() in {"true", "false"}:
                assert truthy(env[key]) == truthy(embedded[key]), (
                    f"{name}: {key}={env[key]!r} but the embedded default has {embedded[key]!r}"
                )
        assert not truthy(env["AIRFLOW__CORE__LOAD_EXAMPLES"]), f"{name}: example DAGs are on"
        assert truthy(env["DO_NOT_TRACK"]) and not truthy(env["SCARF_ANALYTICS"]), f"{name}: telemetry is on"
        assert not truthy(env["AIRFLOW__USAGE_DATA_COLLECTION__ENABLED"]), f"{name}: usage data collection is on"
        assert env.get("_PIP_ADDITIONAL_REQUIREMENTS", "") == "", f"{name}: installs packages at start-up"


def test_scheduler_health_server_is_enabled_for_its_healthcheck(services):
    svc = services["airflow-scheduler"]
    if "8974" in " ".join(map(str, svc["healthcheck"]["test"])):
        assert truthy(env_of(svc).get("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "")), (
            "airflow-scheduler: healthcheck polls :8974/health but AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK is off"
        )


# ---- mounts ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(AIRFLOW_SERVICES))
def test_project_folders_and_lake_mounted(name, compose, services, monkeypatch):
    svc = services[name]
    env = env_of(svc)
    mounts = mounts_of(svc)
    targets = {dst for _, dst, _ in mounts}
    for host_dir in ("dags", "plugins", "dbt_project", "expectations", "config"):
        assert (ROOT / host_dir).is_dir(), f"./{host_dir} is mounted but does not exist in the project"
        found = bind_source(mounts, host_dir)
        assert found, f"{name}: ./{host_dir} is not mounted"

    (_, dags_target, _), = bind_source(mounts, "dags")
    assert dags_target == env["AIRFLOW__CORE__DAGS_FOLDER"], (
        f"{name}: ./dags is mounted at {dags_target} but DAGS_FOLDER is {env['AIRFLOW__CORE__DAGS_FOLDER']}"
    )
    (_, plugins_target, _), = bind_source(mounts, "plugins")
    assert plugins_target == env["AIRFLOW__CORE__PLUGINS_FOLDER"], f"{name}: ./plugins not mounted at PLUGINS_FOLDER"
    assert plugins_target in env.get("PYTHONPATH", "").split(":"), f"{name}: PYTHONPATH lacks {plugins_target} (govlake import)"
    (_, dbt_target, dbt_ro), = bind_source(mounts, "dbt_project")
    assert dbt_target == env.get("DBT_PROJECT_DIR") == env.get("DBT_PROFILES_DIR"), (
        f"{name}: ./dbt_project mounted at {dbt_target}, DBT_PROJECT_DIR={env.get('DBT_PROJECT_DIR')}, "
        f"DBT_PROFILES_DIR={env.get('DBT_PROFILES_DIR')}"
    )
    assert not dbt_ro, f"{name}: ./dbt_project must be writable (dbt writes target/ and logs/)"

    # govlake.config, run with this service's environment, finds the mounted folders
    for key in ("GOVLAKE_PROJECT_ROOT", "GOVLAKE_LAKE_ROOT", "GOVLAKE_WORK_DIR"):
        assert env.get(key), f"{name}: lacks {key}"
        monkeypatch.setenv(key, env[key])
    assert str(config.dags_dir()) == dags_target, f"{name}: govlake.config.dags_dir() is {config.dags_dir()}, not {dags_target}"
    assert str(config.dbt_project_dir()) == dbt_target, f"{name}: govlake.config.dbt_project_dir() != {dbt_target}"
    (_, exp_target, _), = bind_source(mounts, "expectations")
    assert str(config.expectations_dir()) == exp_target, f"{name}: govlake.config.expectations_dir() != {exp_target}"

    # the lake: one named volume, declared at top level, mounted at GOVLAKE_LAKE_ROOT
    lake_root = env["GOVLAKE_LAKE_ROOT"]
    assert str(config.lake_root()) == lake_root, f"{name}: govlake.config.lake_root() is {config.lake_root()}"
    lake_mounts = [(src, ro) for src, dst, ro in mounts if dst == lake_root]
    assert lake_mounts, f"{name}: nothing is mounted at GOVLAKE_LAKE_ROOT={lake_root}"
    (src, ro), = lake_mounts
    assert not src.startswith((".", "/")), f"{name}: the lake must be a named volume, not the bind mount {src}"
    assert src in (compose.get("volumes") or {}), f"{name}: lake volume {src!r} is not declared under top-level volumes"
    assert not ro, f"{name}: the lake volume is read-only"
    assert "/opt/airflow/logs" in targets, f"{name}: task logs are not on a shared volume (/opt/airflow/logs)"


def test_same_lake_volume_everywhere(services):
    seen = {}
    for name in AIRFLOW_SERVICES:
        env = env_of(services[name])
        seen[name] = [src for src, dst, _ in mounts_of(services[name]) if dst == env["GOVLAKE_LAKE_ROOT"]]
    assert len({tuple(v) for v in seen.values()}) == 1, f"the lake volume differs across services: {seen}"


def test_dags_mount_is_the_projects_dags_folder(services):
    (src, _, _), = bind_source(mounts_of(services["airflow-dag-processor"]), "dags")
    assert (ROOT / src).resolve() == (config.PROJECT_ROOT / "dags").resolve(), (
        f"airflow-dag-processor: mounts {src}, which is not the project's dags/ ({config.PROJECT_ROOT / 'dags'})"
    )


# ---- health and start order --------------------------------------------------------------
def test_healthchecks(services):
    pg = " ".join(services["postgres"].get("healthcheck", {}).get("test", []))
    assert "pg_isready" in pg, f"postgres: healthcheck must run pg_isready, has {pg!r}"
    rd = " ".join(services["redis"].get("healthcheck", {}).get("test", []))
    assert "redis-cli" in rd and "ping" in rd, f"redis: healthcheck must run redis-cli ping, has {rd!r}"
    for name in AIRFLOW_COMMANDS:
        hc = services[name].get("healthcheck") or {}
        assert hc.get("test"), f"{name}: has no healthcheck"
    api_hc = " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    ports = container_port(services["airflow-apiserver"])
    assert any(f"localhost:{p}/" in api_hc for p in ports), f"airflow-apiserver: healthcheck {api_hc!r} not on its port {ports}"


def test_depends_on_conditions(services):
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name}: depends_on {dep!r}, which is not a service"
            cond = (spec or {}).get("condition", "service_started")
            assert cond in allowed, f"{name}: depends_on {dep} with unknown condition {cond!r}"
            if cond == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name}: waits for {dep} to be healthy but {dep} has no healthcheck"
            if cond == "service_completed_successfully":
                assert str(services[dep].get("restart", "no")) == "no", f"{name}: waits for {dep} to finish but {dep} restarts"
    for name in AIRFLOW_SERVICES:
        deps = services[name].get("depends_on") or {}
        for infra in ("postgres", "redis"):
            assert deps.get(infra, {}).get("condition") == "service_healthy", f"{name}: does not wait for {infra} to be healthy"
        if name != "airflow-init":
            assert deps.get("airflow-init", {}).get("condition") == "service_completed_successfully", (
                f"{name}: does not wait for airflow-init (db migrate) to complete"
            )
    # no cycles
    def visit(n, path):
        assert n not in path, f"depends_on cycle: {' -> '.join(path + [n])}"
        for d in services[n].get("depends_on") or {}:
            visit(d, path + [n])

    for n in services:
        visit(n, [])


# ---- the image ---------------------------------------------------------------------------
def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            n, v = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", n).lower()] = v.strip()
    return out


def test_dockerfile_installs_project_with_pinned_constraints(services):
    build = services["airflow-worker"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    text = dockerfile.read_text(encoding="utf-8")
    assert "requirements/constraints.txt" in text, f"{dockerfile}: does not reference requirements/constraints.txt"
    pip_lines = " ".join(re.findall(r"pip install(?:[^\n]*\\\n)*[^\n]*", text))
    assert "constraints.txt" in pip_lines and "-c " in pip_lines, f"{dockerfile}: pip install does not use -c constraints"
    for pkg in DEPLOY_ONLY_PACKAGES:
        assert re.search(rf"(^|\s){re.escape(pkg)}(\s|$|\\)", pip_lines), f"{dockerfile}: does not install {pkg}"

    # every COPY source exists in the build context
    for m in re.finditer(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, re.M):
        *sources, _dest = m.group(1).split()
        for s in sources:
            assert (ROOT / build["context"] / s).exists(), f"{dockerfile}: COPY source {s} does not exist"

    # base image: the Airflow version and Python the project pins
    pins = _pins(ROOT / "requirements" / "constraints.txt")
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    from_line = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), from_line)
    assert base == f"apache/airflow:{pins['apache-airflow']}-python3.11", (
        f"{dockerfile}: base image {base} does not match apache-airflow=={pins['apache-airflow']} / python 3.11"
    )


def test_deploy_constraints_do_not_fight_the_project_pins():
    project = _pins(ROOT / "requirements" / "constraints.txt")
    deploy = _pins(ROOT / "docker" / "constraints-deploy.txt")
    clash = {n: (project[n], v) for n, v in deploy.items() if n in project and project[n] != v}
    assert not clash, f"docker/constraints-deploy.txt pins differently from requirements/constraints.txt: {clash}"
    for pkg in DEPLOY_ONLY_PACKAGES:
        assert pkg in deploy, f"docker/constraints-deploy.txt does not pin {pkg}"
    # the local CeleryExecutor cluster (govlake cluster up) runs from the project's venv, so the
    # executor's packages are dependencies there too, at the deployment's pins (make venv passes
    # docker/constraints-deploy.txt to pip)
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for pkg in ("apache-airflow-providers-celery", "psycopg2-binary", "redis"):
        assert f'"{pkg}' in pyproject, f"{pkg}: the local cluster needs it in pyproject.toml"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "-c docker/constraints-deploy.txt" in makefile, "make venv must install at the deployment's pins"


def test_build_context_excludes_venv_and_lake(services):
    build = services["airflow-worker"]["build"]
    ignore = ROOT / build["context"] / f"{build['dockerfile']}.dockerignore"
    if not ignore.exists():
        ignore = ROOT / build["context"] / ".dockerignore"
    assert ignore.exists(), "no .dockerignore for the build: the context would ship .venv and the lake"
    entries = {l.strip().rstrip("/") for l in ignore.read_text(encoding="utf-8").splitlines()}
    for must in (".venv", "lake", ".work", ".git", ".env"):
        assert must in entries, f"{ignore.name}: does not exclude {must}"


def test_env_example_names_every_required_variable():
    raw = COMPOSE_FILE.read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):?\?", raw))
    example = (ROOT / "docker" / "env.example").read_text(encoding="utf-8")
    defined = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.M))
    assert required, "docker-compose.yml requires no variables: secrets would be empty"
    assert required <= defined, f"docker/env.example lacks required variables {sorted(required - defined)}"


# ---- docker compose itself, when it exists -----------------------------------------------
def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if not docker:
        pytest.skip("no docker CLI")
    try:
        proc = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
            cwd=ROOT, capture_output=True, text=True, timeout=20,
            env={**os.environ, **TEST_ENV},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"docker compose unusable here: {exc}")
    out = (proc.stdout + proc.stderr).lower()
    if proc.returncode != 0 and any(
        s in out for s in ("unknown command", "is not a docker command", "unknown shorthand flag",
                           "cannot connect to the docker daemon", "docker daemon", "permission denied")
    ):
        pytest.skip(f"docker compose plugin/engine not available: {(proc.stderr or proc.stdout).strip()[:200]}")
    assert proc.returncode == 0, f"docker compose config rejected docker-compose.yml:\n{proc.stderr}"
