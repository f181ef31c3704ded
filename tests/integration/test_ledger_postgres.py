"""The delivery ledger in Postgres (``GOVLAKE_STATE_DB=postgresql://...``, as the cluster and
docker-compose set it) follows the same rules as the embedded SQLite file.

A throwaway Postgres (``initdb`` into a temporary folder, as the ``postgres`` OS user when run as
root, TCP on a free loopback port only) is started once for the module and stopped in a finally.
Real extraction (``ingest.extract_dataset``) writes the ledger there: a new file is ingested, a
re-sent one skipped, an unchanged snapshot on a new date recorded once as ``duplicate``, a
corrected file supersedes the old batch; two processes recording the same file at once leave
exactly one row. Skipped, saying why, when the Postgres binaries are not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from govlake import ingest, metadata
from govlake.ledger import Ledger, StateDBError, ensure_database, redact, state_db_url
from govlake.ops import cluster

ROOT = Path(__file__).resolve().parents[2]
SOCIAL = metadata.dataset("human_resources.social_insurance")
D1, D2 = "2026-11-20", "2026-11-21"


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", cluster.PG_OS_USER, "--"] + cmd if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_server():
    """``postgresql://postgres@127.0.0.1:<port>`` of a fresh Postgres; stopped and removed after."""
    bindir = cluster._pg_bindir()
    if bindir is None:
        pytest.skip("Postgres binaries (initdb, pg_ctl) not installed: apt-get install -y postgresql-15")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root and runuser is missing: initdb refuses to run as root")
    base = Path(tempfile.mkdtemp(prefix="govlake-pg-"))
    os.chmod(base, 0o755)  # the postgres OS user must reach its data folder
    data = base / "data"
    data.mkdir(mode=0o700)
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam(cluster.PG_OS_USER)
        os.chown(data, pw.pw_uid, pw.pw_gid)
    port = cluster.free_port()
    started = False
    try:
        subprocess.run(_as_pg_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                                    "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=trust"]),
                       check=True, capture_output=True, timeout=120)
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                "-c fsync=off -c synchronous_commit=off")
        subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"),
                                    "-o", opts, "-w", "-t", "60", "start"]), check=True, capture_output=True,
                       timeout=90)
        started = True
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run(_as_pg_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                        "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def state_db(pg_server) -> str:
    url = f"{pg_server}/govlake"
    assert ensure_database(url) == "govlake"
    assert ensure_database(url) == "govlake"  # again: already there, nothing to do
    return url


@pytest.fixture()
def pg_lake(lake, state_db, monkeypatch):
    """A fresh lake whose ledger is the (emptied) Postgres database, chosen by GOVLAKE_STATE_DB."""
    monkeypatch.setenv("GOVLAKE_STATE_DB", state_db)
    led = Ledger(lake)
    with led._conn() as c:
        c.execute("truncate deliveries, landing_hashes")
    led.close()
    return lake


def _deliver(lake, data: str, name: str, date: str) -> Path:
    d = lake.landing(SOCIAL.dept, SOCIAL.name, date)
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(data, encoding="utf-8")
    return d / name


def _rows(*names: str) -> str:
    return "".join(json.dumps({c: None for c in SOCIAL.column_names}
                              | {"aac002": f"11010519491231{i:04d}", "aac003": n}, ensure_ascii=False) + "\n"
                   for i, n in enumerate(names))


def test_the_setting_chooses_the_backend(lake, monkeypatch):
    monkeypatch.delenv("GOVLAKE_STATE_DB", raising=False)
    assert Ledger(lake).backend == "sqlite" and lake.ledger_db.exists()
    monkeypatch.setenv("GOVLAKE_STATE_DB", "mysql://u:secret@h/db")
    with pytest.raises(StateDBError, match="GOVLAKE_STATE_DB") as e:
        Ledger(lake)
    assert "secret" not in str(e.value)
    assert redact("postgresql://airflow:pw@postgres:5432/govlake") == "postgresql://airflow:***@postgres:5432/govlake"
    assert state_db_url("  ") is None


def test_extraction_rules_hold_in_postgres(pg_lake):
    lake = pg_lake
    sqlite_file = lake.ledger_db
    _deliver(lake, _rows("张三", "李四"), "si.jsonl", D1)
    r = ingest.extract_dataset(SOCIAL, lake)
    assert [(f.status, f.rows) for f in r.files] == [("ingested", 2)]
    led = Ledger(lake)
    assert led.backend == "postgres"
    [first] = led.all(SOCIAL.dept, SOCIAL.name)
    assert (first.status, first.rows, first.delivery_date) == ("ingested", 2, D1)
    assert not sqlite_file.exists(), "the Postgres setting must not write the SQLite ledger"

    # re-run (the file seen again for its date): skipped, nothing added
    r = ingest.extract_dataset(SOCIAL, lake)
    assert [f.status for f in r.files] == ["skipped"]
    assert len(led.all()) == 1

    # the same bytes for a new date: one 'duplicate' row pointing at the original batch
    _deliver(lake, _rows("张三", "李四"), "si.jsonl", D2)
    ingest.extract_dataset(SOCIAL, lake)
    ingest.extract_dataset(SOCIAL, lake)
    dup = [e for e in led.all(SOCIAL.dept, SOCIAL.name) if e.delivery_date == D2]
    assert [(e.status, e.rows, e.batch_id) for e in dup] == [("duplicate", 0, first.batch_id)]

    # a corrected file, same name and date: a new batch superseding the first
    _deliver(lake, _rows("张三", "李四", "王五"), "si.jsonl", D1)
    r = ingest.extract_dataset(SOCIAL, lake)
    new = next(f for f in r.files if f.status == "ingested")
    assert new.supersedes == first.batch_id
    by_batch = {(e.batch_id, e.status): e for e in led.all(SOCIAL.dept, SOCIAL.name)}
    assert by_batch[(first.batch_id, "ingested")].superseded_by == new.batch_id
    assert by_batch[(new.batch_id, "ingested")].rows == 3

    # the Parquet export dbt reads is written from Postgres, Chinese intact
    exported = duckdb.sql(f"select batch_id, status, superseded_by from read_parquet('{lake.ledger_export}') "
                          "order by ingested_at").fetchall()
    assert (first.batch_id, "ingested", new.batch_id) in exported and len(exported) == 3
    names = duckdb.sql(f"select aac003 from read_parquet('{lake.raw_glob(SOCIAL.dept, SOCIAL.name)}') "
                       f"where _batch_id = '{new.batch_id}' order by _row_number").fetchall()
    assert [n for (n,) in names] == ["张三", "李四", "王五"]
    # the landing-hash cache works there too (bigint nanosecond times)
    f = lake.landing(SOCIAL.dept, SOCIAL.name, D2) / "si.jsonl"
    os.utime(f, ns=(f.stat().st_atime_ns, time.time_ns() - 10**10))
    led.remember_sha("x/si.jsonl", f.stat(), "ab" * 32, time.time_ns())
    assert led.cached_sha("x/si.jsonl", f.stat()) == "ab" * 32


RECORDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from govlake.ledger import Delivery, Ledger
    from govlake.storage import Lake
    d = Delivery(batch_id="b-1", dept="human_resources", dataset="social_insurance", delivery_date="2026-11-20",
                 file_name="si.jsonl", source_file="human_resources/social_insurance/2026-11-20/si.jsonl",
                 sha256="cd" * 32, size_bytes=5_000_000_000, rows=1, status="ingested", encoding="utf-8",
                 reason=None, message=sys.argv[2], supersedes=None, superseded_by=None,
                 ingested_at="2026-11-20T00:00:00+00:00")
    led = Ledger(Lake(Path(sys.argv[1])))
    print("added" if led.record(d) else "kept", flush=True)
""")


def test_two_processes_recording_the_same_file_leave_one_batch(pg_lake, state_db):
    lake = pg_lake
    holder = Ledger(lake)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "plugins"), GOVLAKE_STATE_DB=state_db)
    procs = []
    with holder._transaction() as c:  # hold the writers' lock: both recorders queue behind it
        for who in ("worker1", "worker2"):
            procs.append(subprocess.Popen([sys.executable, "-c", RECORDER, str(lake.root), who], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        try:
            end, waiting = time.monotonic() + 30, 0
            with Ledger(lake)._conn() as watcher:  # another session: sees the recorders wait
                while time.monotonic() < end and waiting < 2 and all(p.poll() is None for p in procs):
                    time.sleep(0.1)
                    waiting = watcher.execute("select count(*) as n from pg_locks where not granted").fetchone()["n"]
            assert waiting >= 2, "both recorders should be waiting for the ledger's writer lock"
        except BaseException:
            for p in procs:
                p.kill()
                p.wait()
            raise
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(out.strip())
    assert sorted(outs) == ["added", "kept"]
    rows = [e for e in Ledger(lake).all() if e.sha256 == "cd" * 32]
    assert len(rows) == 1 and rows[0].batch_id == "b-1" and rows[0].size_bytes == 5_000_000_000


def test_the_clusters_postgres_holds_the_ledger(lake, monkeypatch):
    """``govlake cluster up``'s Postgres step creates the ``govlake`` database (also when the
    state folder predates it), and the ledger opens there with cluster_env()'s setting."""
    if cluster._pg_bindir() is None:
        pytest.skip("Postgres binaries (initdb, pg_ctl) not installed: apt-get install -y postgresql-15")
    state = Path(tempfile.mkdtemp(prefix="govlake-cluster-pg-"))
    os.chmod(state, 0o755)
    c = cluster.Cluster.at(state)
    c.assign_ports()
    for d in (c.log_dir, c.pid_dir):  # as up() prepares them
        d.mkdir(parents=True, exist_ok=True)
    said: list[str] = []
    try:
        cluster._start_postgres(c, said.append)
        assert "create database govlake" in said
        url = c.env("worker1")["GOVLAKE_STATE_DB"]
        monkeypatch.setenv("GOVLAKE_STATE_DB", url)
        led = Ledger(lake)
        assert led.backend == "postgres" and led.all() == []
        led.close()
        said.clear()
        cluster._start_postgres(c, said.append)  # again, running: nothing to create
        assert "create database govlake" not in said and "postgres already running" in said
        # a state folder from before the ledger moved: its Postgres has no govlake database yet
        from govlake.ledger import _PgConn

        admin = _PgConn(url.rsplit("/", 1)[0] + "/airflow")
        admin.execute("drop database govlake")
        admin.close()
        said.clear()
        cluster._start_postgres(c, said.append)
        assert "create database govlake" in said and Ledger(lake).all() == []
    finally:
        cluster.down(state, say=lambda *_: None)
        shutil.rmtree(state, ignore_errors=True)
