"""A real multi-process Airflow deployment on one machine: the docker-compose shape without Docker.

``govlake cluster up`` starts, on loopback only and under a state folder (default
``.work/cluster/``):

* a private Postgres cluster (``initdb`` into ``pg/``, unix socket in ``run/``), db/user ``airflow``,
  and the ``govlake`` database (owner ``airflow``) holding the delivery ledger
  (``GOVLAKE_STATE_DB``, see govlake.ledger) that extract tasks on both workers write;
  as root, postgres runs as the ``postgres`` OS user (``runuser``), which must be able to reach
  the state folder (every parent directory searchable);
* Redis (``redis-server --bind 127.0.0.1``, no persistence) as the Celery broker;
* Airflow with the settings of docker-compose.yml's ``x-airflow-common`` environment
  (:func:`cluster_env`): CeleryExecutor, ``postgresql+psycopg2`` metadata DB, ``db+postgresql``
  result backend, ``redis://`` broker, the api-server's ``/execution/`` API, the project's
  dags/plugins folders and GOVLAKE_* roots. ``airflow db migrate``, the ``duckdb_writer`` pool,
  then api-server, scheduler, dag-processor, triggerer and two Celery workers (``worker1@``,
  ``worker2@``, both on the ``default`` queue, each with its own log-server port).

Every process logs to ``logs/<name>.log`` and has ``pids/<name>.pid``; Airflow processes run in
their own session, so ``down`` (and a test's ``kill -9``) reach the whole process group.
``state.json`` records the ports; ``secrets.json`` (0600) the fernet key, JWT secret, API
secret key and admin password, generated once per state folder.

One intentional difference from the compose file: the auth manager. Compose uses the FAB auth
manager (the image carries apache-airflow-providers-fab); the cluster uses Airflow's simple auth
manager with one admin user whose password is in ``secrets.json`` — the REST API and JWTs
(``POST /auth/token``) work the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from govlake import config

AIRFLOW_PROCESSES = ["api-server", "scheduler", "dag-processor", "triggerer", "worker1", "worker2"]
WORKERS = ["worker1", "worker2"]
QUEUE = "default"
DB_NAME = DB_USER = "airflow"
STATE_DB_NAME = "govlake"  # the ledger's database (GOVLAKE_STATE_DB), as in docker-compose.yml
ADMIN_USER = "admin"
PG_OS_USER = "postgres"


class ClusterError(RuntimeError):
    """The cluster could not be started/stopped; the message names the step and the log file."""


# ----------------------------------------------------------------------------- binaries
def _pg_bindir() -> Path | None:
    for cand in [os.environ.get("GOVLAKE_PG_BINDIR")] + [f"/usr/lib/postgresql/{v}/bin" for v in (15, 16, 17)]:
        if cand and (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found and shutil.which("pg_ctl") else None


def missing_binaries() -> list[str]:
    """Names of the system programs the cluster needs that are not installed (empty = ready)."""
    missing = []
    if _pg_bindir() is None:
        missing.append("postgresql (initdb, pg_ctl)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser")
    return missing


def missing_python_packages() -> list[str]:
    import importlib.util

    mods = {"apache-airflow-providers-celery": "airflow.providers.celery", "psycopg2-binary": "psycopg2",
            "redis": "redis"}
    return [pkg for pkg, mod in mods.items() if importlib.util.find_spec(mod.split(".")[0]) is None
            or (mod.startswith("airflow.providers") and _no_provider(mod))]


def _no_provider(mod: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(mod) is None
    except ModuleNotFoundError:
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- state
@dataclass
class Cluster:
    state_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def at(cls, state_dir: Path | str | None = None) -> "Cluster":
        d = Path(state_dir) if state_dir else config.work_dir() / "cluster"
        c = cls(d.resolve())
        if c.state_file.exists():
            c.ports = json.loads(c.state_file.read_text())["ports"]
        return c

    # layout
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def pg_dir(self) -> Path:
        return self.state_dir / "pg"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.pid_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        if name == "postgres":
            f = self.pg_dir / "postmaster.pid"
        else:
            f = self.pidfile(name)
        try:
            return int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def secrets(self) -> dict[str, str]:
        if not self.secrets_file.exists():
            from cryptography.fernet import Fernet

            self.state_dir.mkdir(parents=True, exist_ok=True)
            data = {"fernet_key": Fernet.generate_key().decode(), "jwt_secret": secrets.token_urlsafe(32),
                    "api_secret_key": secrets.token_urlsafe(32), "admin_password": secrets.token_urlsafe(12),
                    "postgres_password": secrets.token_urlsafe(12)}
            fd = os.open(self.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
        return json.loads(self.secrets_file.read_text())

    def assign_ports(self, **fixed: int | None) -> dict[str, int]:
        """Ports from ``fixed`` (or GOVLAKE_CLUSTER_<NAME>_PORT), else free ones; kept in state.json."""
        names = ["postgres", "redis", "api", "scheduler_health", "triggerer_logs"] + [f"{w}_logs" for w in WORKERS]
        ports = {}
        for n in names:
            v = fixed.get(n) or os.environ.get(f"GOVLAKE_CLUSTER_{n.upper()}_PORT") or self.ports.get(n)
            ports[n] = int(v) if v else free_port()
        self.ports = ports
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"ports": ports}, indent=1))
        return ports

    # ------------------------------------------------------------------------- environment
    def env(self, process: str | None = None) -> dict[str, str]:
        return cluster_env(self, process)


def cluster_env(cluster: Cluster, process: str | None = None) -> dict[str, str]:
    """The environment of every Airflow process of the local cluster.

    Same keys and same kinds of values as docker-compose.yml's ``x-airflow-common`` environment
    (tests/unit/test_cluster_settings.py compares them); hosts are 127.0.0.1 and ports those of
    ``state.json`` instead of the compose service names. ``process`` adds per-process settings
    (a worker's log-server port)."""
    s = cluster.secrets()
    p = cluster.ports
    pg = f"{DB_USER}:{s['postgres_password']}@127.0.0.1:{p['postgres']}/{DB_NAME}"
    env = dict(config.full_env())  # GOVLAKE_PROJECT_ROOT/LAKE_ROOT, DBT_*, telemetry off, PYTHONPATH
    for k in ("AIRFLOW__CORE__PARALLELISM", "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG",
              "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL"):
        env.pop(k, None)  # embedded-only tuning, not in the compose file
    env.update({
        "AIRFLOW_HOME": str(cluster.airflow_home),
        "GOVLAKE_WORK_DIR": str(config.work_dir()),
        "GOVLAKE_TRANSFORM_RETRIES": "1",  # a transform task lost with its worker runs again on another
        # state with concurrent writers (the delivery ledger) in Postgres, not a SQLite file
        "GOVLAKE_STATE_DB": f"postgresql://{DB_USER}:{s['postgres_password']}@127.0.0.1:{p['postgres']}/{STATE_DB_NAME}",
        # --- executor, metadata DB, broker (as in docker-compose.yml)
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:@127.0.0.1:{p['redis']}/0",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": os.environ.get("AIRFLOW_WORKER_CONCURRENCY", "4"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{p['api']}/execution/",
        # --- shared secrets, identical in every process
        "AIRFLOW__CORE__FERNET_KEY": s["fernet_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": s["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": s["api_secret_key"],
        # the one intended difference: simple auth manager (FAB provider not in the local venv)
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cluster.airflow_home / "passwords.json"),
        # --- the project's folders
        "AIRFLOW__CORE__DAGS_FOLDER": str(config.dags_dir()),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.project_root() / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # one machine: every listening port is loopback and chosen per cluster
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(p["scheduler_health"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(p["triggerer_logs"]),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(cluster.airflow_home / "logs"),
        "AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE": "False",
        "_PIP_ADDITIONAL_REQUIREMENTS": "",
    })
    # task instances and jobs record "<process>@<host>": two workers on one host stay distinguishable
    env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "govlake.ops.cluster.node_hostname"
    if process:
        env["GOVLAKE_CLUSTER_NODE"] = process
    if process in WORKERS:
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(p[f"{process}_logs"])
    return env


def node_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` in the cluster: ``worker1@<fqdn>`` etc."""
    node = os.environ.get("GOVLAKE_CLUSTER_NODE")
    fqdn = socket.getfqdn()
    return f"{node}@{fqdn}" if node else fqdn


# ----------------------------------------------------------------------------- processes
def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        st = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return st != "Z"
    except OSError:
        return True


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_OS_USER, "--"] + cmd if os.geteuid() == 0 else cmd


def _run(cmd: list[str], step: str, log: Path, env: dict | None = None, timeout: float = 600) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    if r.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise ClusterError(f"{step} failed (exit {r.returncode}); log {log}:\n{tail}")


def _airflow_bin() -> str:
    cand = Path(sys.executable).parent / "airflow"
    return str(cand) if cand.exists() else (shutil.which("airflow") or "airflow")


def _start_postgres(c: Cluster, say) -> None:
    bindir = _pg_bindir()
    if bindir is None:
        raise ClusterError("postgres binaries not found (apt-get install -y postgresql-15)")
    c.run_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam(PG_OS_USER)
        for d in (c.run_dir,):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        probe = subprocess.run(_as_pg_user(["test", "-x", str(c.state_dir)]))
        if probe.returncode != 0:
            raise ClusterError(f"the OS user {PG_OS_USER!r} cannot reach {c.state_dir}: make every parent "
                               "directory searchable (chmod o+x) or choose another --state-dir")
    log = c.log("postgres")
    if not (c.pg_dir / "PG_VERSION").exists():
        say("initdb")
        c.pg_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(c.pg_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(c.pg_dir, 0o700)
        _run(_as_pg_user([str(bindir / "initdb"), "-D", str(c.pg_dir), "-U", "postgres", "-E", "UTF8",
                          "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"]),
             "initdb", log)
        fresh = True
    else:
        fresh = False
    if _alive(c.pid("postgres")):
        say("postgres already running")
    else:
        say(f"postgres on 127.0.0.1:{c.ports['postgres']}")
        opts = (f"-p {c.ports['postgres']} -k {c.run_dir} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c fsync=off -c synchronous_commit=off")
        # the server log goes to a file postgres owns (runuser cannot write into root's log dir)
        _run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(c.pg_dir), "-l", str(c.pg_dir / "server.log"),
                          "-o", opts, "-w", "-t", "60", "start"]), "pg_ctl start", log)
    psql = [str(bindir / "psql") if (bindir / "psql").exists() else "psql", "-h", str(c.run_dir),
            "-p", str(c.ports["postgres"]), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
    if fresh:
        pw_sql = c.secrets()["postgres_password"].replace("'", "''")
        sql = (f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{pw_sql}';"
               f"CREATE DATABASE {DB_NAME} OWNER {DB_USER} ENCODING 'UTF8';")
        for stmt in sql.split(";"):
            if stmt:
                _run(psql + ["-c", stmt], "create airflow role/db", log)
    # the ledger's database, also in a state folder made before it existed
    probe = subprocess.run(psql + ["-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{STATE_DB_NAME}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise ClusterError(f"cannot list the databases of the cluster's postgres: {probe.stderr.strip()}")
    if probe.stdout.strip() != "1":
        say(f"create database {STATE_DB_NAME}")
        _run(psql + ["-c", f"CREATE DATABASE {STATE_DB_NAME} OWNER {DB_USER} ENCODING 'UTF8'"],
             f"create {STATE_DB_NAME} db", log)


def _start_redis(c: Cluster, say) -> None:
    if _alive(c.pid("redis")):
        say("redis already running")
        return
    say(f"redis on 127.0.0.1:{c.ports['redis']}")
    d = c.state_dir / "redis"
    d.mkdir(parents=True, exist_ok=True)
    _run(["redis-server", "--port", str(c.ports["redis"]), "--bind", "127.0.0.1", "--dir", str(d),
          "--daemonize", "yes", "--pidfile", str(c.pidfile("redis")), "--logfile", str(c.log("redis")),
          "--save", "", "--appendonly", "no", "--protected-mode", "yes"], "redis-server", c.log("redis-start"))
    _wait(lambda: _port_open(c.ports["redis"]) and c.pid("redis"), 20, "redis to listen", c.log("redis"))


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(pred, timeout: float, what: str, log: Path | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}" + (f"; log {log}:\n{tail}" if log else ""))


def _airflow_cmd(name: str, c: Cluster) -> list[str]:
    af = _airflow_bin()
    if name == "api-server":
        return [af, "api-server", "--host", "127.0.0.1", "--port", str(c.ports["api"]), "--workers", "1"]
    if name in WORKERS:
        return [af, "celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", QUEUE]
    return [af, name]


def _spawn(c: Cluster, name: str, extra_env: dict | None) -> int:
    if _alive(c.pid(name)):
        return c.pid(name)
    env = {**os.environ, **c.env(name), **(extra_env or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = open(c.log(name), "ab")
    proc = subprocess.Popen(_airflow_cmd(name, c), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, cwd=str(c.state_dir), start_new_session=True)
    out.close()
    c.pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _api_ready(c: Cluster) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{c.api_url}/api/v2/version", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def up(state_dir: Path | str | None = None, extra_env: dict | None = None, say=print,
       timeout: float = 300, **ports: int | None) -> Cluster:
    """Start postgres, redis and the Airflow processes (idempotent: running ones are kept)."""
    missing = missing_binaries() + missing_python_packages()
    if missing:
        raise ClusterError("cannot start the cluster, missing: " + ", ".join(missing))
    c = Cluster.at(state_dir)
    for d in (c.state_dir, c.log_dir, c.pid_dir, c.airflow_home):
        d.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chmod(c.state_dir, 0o755)
    c.assign_ports(**ports)
    s = c.secrets()
    pwfile = c.airflow_home / "passwords.json"
    if not pwfile.exists():
        pwfile.write_text(json.dumps({ADMIN_USER: s["admin_password"]}))
        os.chmod(pwfile, 0o600)
    _start_postgres(c, say)
    _start_redis(c, say)
    env = {**os.environ, **c.env(), **(extra_env or {})}
    say("airflow db migrate")
    _run([_airflow_bin(), "db", "migrate"], "airflow db migrate", c.log("db-migrate"), env=env)
    _run([_airflow_bin(), "pools", "set", "duckdb_writer", "1", "one writer on the DuckDB file"],
         "airflow pools set duckdb_writer", c.log("db-migrate"), env=env)
    for name in AIRFLOW_PROCESSES:
        say(f"start {name} (log {c.log(name)})")
        _spawn(c, name, extra_env)
        if name == "api-server":  # workers report through its Execution API
            _wait(lambda: _api_ready(c) or not _alive(c.pid("api-server")), timeout, "the api-server",
                  c.log("api-server"))
            if not _alive(c.pid("api-server")):
                raise ClusterError(f"api-server exited; log {c.log('api-server')}:\n"
                                   + c.log("api-server").read_text(errors="replace")[-3000:])
    say(f"cluster up: {c.api_url} (user {ADMIN_USER}, password in {c.secrets_file})")
    return c


def status(state_dir: Path | str | None = None) -> dict[str, dict]:
    """Each process: pid and alive (True/False); postgres and redis included."""
    c = Cluster.at(state_dir)
    out = {}
    for name in ["postgres", "redis"] + AIRFLOW_PROCESSES:
        pid = c.pid(name)
        out[name] = {"pid": pid, "alive": _alive(pid), "log": str(c.log(name))}
    return out


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_process(c: Cluster, name: str, grace: float = 20) -> None:
    pid = c.pid(name)
    if pid and _alive(pid):
        _kill_group(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end and _alive(pid):
            _reap(pid)
            time.sleep(0.3)
        _kill_group(pid, signal.SIGKILL)  # stragglers of the group (task processes, pool children)
        _reap(pid)
    c.pidfile(name).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def down(state_dir: Path | str | None = None, say=print) -> list[str]:
    """Stop everything `up` started: Airflow processes (whole process groups), redis, postgres.
    Returns the names of processes still alive afterwards (empty when all is stopped)."""
    c = Cluster.at(state_dir)
    for name in reversed(AIRFLOW_PROCESSES):
        say(f"stop {name}")
        stop_process(c, name)
    say("stop redis")
    stop_process(c, "redis", grace=10)
    if _alive(c.pid("postgres")):
        say("stop postgres")
        bindir = _pg_bindir()
        try:
            _run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(c.pg_dir), "-m", "fast", "-w", "stop"]),
                 "pg_ctl stop", c.log("postgres"))
        except ClusterError:
            pid = c.pid("postgres")
            if pid:
                os.kill(pid, signal.SIGKILL)
    return [n for n, s in status(state_dir).items() if s["alive"]]
