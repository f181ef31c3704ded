"""Run the pipeline through Airflow, in-process (``dag.test()``), with no server to start.

``govlake run`` runs every extraction DAG (then, once they exist, the transform DAG) for a
logical date and prints a per-feed summary. Airflow's own log output goes to a log file under
``.work/logs/``; the terminal gets the summary.

Two guarantees (a run that exits 0 has left no work undone):

- **lake lock** — a run holds an exclusive ``flock`` on ``<lake>/_meta/locks/run.lock`` (JSON:
  pid, host, user, started_at, argv) from start to end. A second run on the same lake refuses
  at once (``LakeBusy``, exit code 75) naming the holder, or waits for it with ``--wait``. The
  kernel drops the lock when the holder dies, so a killed run leaves no stale lock.
- **unpublished work is finished** — the transform runs whenever the lake holds landed
  (ingested) batches that the current published products do not reflect (``unpublished_work``:
  per product, the live input batches against the ``inputs`` of its current ``_manifest.json``),
  not only when this run's extraction landed something. A run that was killed, failed, or
  extracted with ``--only`` is therefore finished (or fails again, loudly) by the next full run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from govlake import config


def ensure_airflow_db() -> Path:
    """Create or migrate the embedded Airflow SQLite DB (idempotent, ~3 s the first time)."""
    config.apply_env()
    home = Path(os.environ["AIRFLOW_HOME"])
    stamp = home / ".govlake-db-migrated"
    db = home / "airflow.db"
    if stamp.exists() and db.exists():
        return db
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow) if airflow.exists() else "airflow", "db", "migrate"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    pool = subprocess.run(cmd[:1] + ["pools", "set", "duckdb_writer", "1", "one writer on the DuckDB file"],
                          capture_output=True, text=True, env=os.environ.copy())
    if pool.returncode != 0:
        raise RuntimeError(f"airflow pools set failed:\n{pool.stderr[-3000:]}")
    stamp.write_text(dt.datetime.now(dt.timezone.utc).isoformat())
    return db


def load_dags() -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(config.dags_dir()))
    if bag.import_errors:
        msgs = "\n".join(f"{f}: {e}" for f, e in bag.import_errors.items())
        raise RuntimeError(f"DAG import errors:\n{msgs}")
    return bag.dags


def _xcoms(dag_id: str, run_id: str, key: str) -> dict[str, object]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out = {}
    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == key)
        ).all()
        for r in rows:
            val = r.value
            if isinstance(val, (bytes, str)):
                try:
                    val = json.loads(val)
                except (TypeError, ValueError):
                    pass
            out[r.task_id] = val
    return out


def _task_states(dagrun) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dagrun.get_task_instances(session=session)
        return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis}


@contextlib.contextmanager
def _airflow_output_to(log_file: Path):
    """Send everything Airflow prints (stdout, stderr, logging) to a file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_file, "a", encoding="utf-8") as fh:
        saved_out, saved_err = os.dup(1), os.dup(2)
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            # fd-level only: structlog keeps a reference to sys.stdout, which must stay open
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)


def run_dag(dag, logical_date: dt.datetime, log_file: Path | None = None) -> dict:
    """Run one DAG with dag.test(); returns {'dag_id','state','tasks':{task: state},'summaries':{...}}."""
    t0 = time.monotonic()
    started = dt.datetime.now(dt.timezone.utc)
    ctx = _airflow_output_to(log_file) if log_file else contextlib.nullcontext()
    with ctx:
        dr = dag.test(logical_date=logical_date)
    _record_real_times(dr, started)
    states = _task_states(dr)
    return {
        "dag_id": dag.dag_id,
        "run_id": dr.run_id,
        "state": str(dr.state.value if hasattr(dr.state, "value") else dr.state),
        "tasks": states,
        "summaries": _xcoms(dag.dag_id, dr.run_id, "summary"),
        "returns": _xcoms(dag.dag_id, dr.run_id, "return_value"),
        "seconds": round(time.monotonic() - t0, 2),
    }


def _record_real_times(dr, started: dt.datetime) -> None:
    """dag.test() records the run's start as its logical date (Airflow's sdk ``DAG.test``:
    ``start_date=logical_date``), so the UI showed a run of a past day as lasting days. Store
    the wall-clock start (and end, if missing) so durations in the Airflow UI are true."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    ended = dt.datetime.now(dt.timezone.utc)
    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.id == dr.id).values(
            start_date=started, end_date=DagRun.end_date if dr.end_date and dr.end_date >= started else ended))


def logical_datetime(date: str | None) -> dt.datetime:
    d = dt.date.fromisoformat(date) if date else dt.datetime.now(dt.timezone.utc).date()
    # end of the delivery day, so deliveries dated D are in scope for a run on D
    return dt.datetime(d.year, d.month, d.day, 23, 59, tzinfo=dt.timezone.utc)


def run_pipeline(date: str | None = None, only: list[str] | None = None, log_file: Path | None = None,
                 progress: bool = True, wait: bool = False) -> list[dict]:
    """Run every extraction DAG (then the transform DAG, if present) for ``date``, holding the
    lake's run lock (``LakeBusy`` if another run holds it, unless ``wait``)."""
    from rich.console import Console

    from govlake.storage import Lake

    config.apply_env()
    console = Console(stderr=True, quiet=not progress)
    with run_lock(Lake.default(), wait=wait, console=console):
        return _run_pipeline(date, only, log_file, console)


def _run_pipeline(date: str | None, only: list[str] | None, log_file: Path | None, console) -> list[dict]:
    from govlake.storage import Lake

    ensure_airflow_db()
    logical = logical_datetime(date)
    with _airflow_output_to(log_file) if log_file else contextlib.nullcontext():
        dags = load_dags()
    extract_ids = sorted(d for d in dags if d.startswith("extract_"))
    if only:
        extract_ids = [d for d in extract_ids if d.removeprefix("extract_") in only]
    # extraction, then the transform (data-aware), then the operations monitor (freshness,
    # 互联互通率, alerts; publishes department_connectivity)
    order = extract_ids + [d for d in ("transform_shared", "ops_monitor") if d in dags and not only]
    results = []
    lake = Lake.default()
    for dag_id in order:
        work = None
        if dag_id == "transform_shared":
            work = unpublished_work(lake)
            if not work.needed:
                console.print("  transform_shared: not run — every landed batch is already published "
                              "(data-aware schedule: it runs when a raw Asset changes)", soft_wrap=True)
                continue
            earlier = work.not_landed_by(_landed_batches(results))
            if earlier.needed:
                console.print(f"  transform_shared: finishing unpublished work — {earlier.describe()}", soft_wrap=True)
        with console.status(f"running {dag_id} through Airflow …"):
            res = run_dag(dags[dag_id], logical, log_file)
        if work is not None:
            res["unpublished_work"] = work.as_dict()
            res["finishing_unpublished"] = work.not_landed_by(_landed_batches(results)).as_dict()
        console.print(f"  {dag_id}: {res['state']} in {res['seconds']} s")
        results.append(res)
    if only and "transform_shared" in dags:
        work = unpublished_work(lake)
        if work.needed:
            console.print(f"  transform_shared: not run (--only) — {work.describe()}; they are waiting: "
                          "a full `govlake run` (without --only) will publish them", soft_wrap=True)
    return results


def _landed_batches(results: list[dict]) -> set[str]:
    """Batch ids the extractions of this run landed."""
    return {b for r in results for s in r["summaries"].values() if isinstance(s, dict)
            for b in s.get("new_batches") or []}


@dataclass
class UnpublishedWork:
    """What the published products do not reflect yet: landed batches missing from a product's
    current inputs (``batches``: dicts dept, dataset, batch_id, delivery_date, products), products
    with no current version (``unpublished``), and products whose current inputs name batches no
    longer live, e.g. superseded (``stale``)."""

    batches: list[dict] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.batches or self.unpublished or self.stale)

    def not_landed_by(self, landed: set[str]) -> "UnpublishedWork":
        """The part of the work that does not come from the batches ``landed`` (this run's)."""
        if not landed:
            return self
        # a product never published gets this run's batches: nothing earlier unless batches are
        return UnpublishedWork([b for b in self.batches if b["batch_id"] not in landed], [], list(self.stale))

    def describe(self, limit: int = 4) -> str:
        parts = []
        if self.batches:
            n = len(self.batches)
            shown = ", ".join(f"{b['dept']}.{b['dataset']}: {b['delivery_date']}" for b in self.batches[:limit])
            more = ", …" if n > limit else ""
            parts.append(f"{n} landed batch{'es' if n != 1 else ''} not yet published ({shown}{more})")
        if self.unpublished:
            parts.append(f"no published version of {', '.join(self.unpublished)}")
        if self.stale:
            parts.append(f"current inputs of {', '.join(self.stale)} are no longer live (superseded)")
        return "; ".join(parts) or "nothing"

    def as_dict(self) -> dict:
        return {"batches": self.batches, "unpublished": self.unpublished, "stale": self.stale,
                "message": self.describe() if self.needed else ""}


def unpublished_work(lake) -> UnpublishedWork:
    """Compare, per shared product, the batch ids of the live inputs (``transform.live_inputs``
    restricted to ``transform.product_sources``, exactly what ``publish_layer`` records) with the
    ``inputs`` of the product's current ``_manifest.json``."""
    from govlake import transform

    products = transform.shared_products()
    inputs = transform.live_inputs(lake)
    sources = transform.product_sources(lake)
    work = UnpublishedWork()
    missing: dict[str, dict] = {}
    for product in products:
        manifest = lake.manifest(product) if lake.current_version(product) is not None else None
        if manifest is None:
            work.unpublished.append(product)
        used = sources.get(product)
        live = {i["batch_id"]: i for i in inputs if used is None or f"{i['dept']}.{i['dataset']}" in used}
        have = {i.get("batch_id") for i in (manifest or {}).get("inputs") or [] if isinstance(i, dict)}
        for bid in sorted(set(live) - have):
            i = live[bid]
            entry = missing.setdefault(bid, {"dept": i["dept"], "dataset": i["dataset"], "batch_id": bid,
                                             "delivery_date": i["delivery_date"], "products": []})
            entry["products"].append(product)
        if have - set(live):
            work.stale.append(product)
    work.batches = sorted(missing.values(), key=lambda b: (b["delivery_date"], b["dept"], b["dataset"], b["batch_id"]))
    return work


# ------------------------------------------------------------------------------ run lock
EX_TEMPFAIL = 75  # sysexits.h: temporary failure, try again later


class LakeBusy(RuntimeError):
    """Another ``govlake run`` holds the lake's run lock."""

    exit_code = EX_TEMPFAIL


def run_lock_path(lake) -> Path:
    return lake.run_lock


def _lock_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 1 << 16)
        return json.loads(data.decode("utf-8")) if data.strip() else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "a process that has not recorded itself yet"
    argv = holder.get("argv")
    cmd = " ".join(argv) if isinstance(argv, list) else str(argv or "?")
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} (user {holder.get('user', '?')}) "
            f"started {holder.get('started_at', '?')}, command {cmd}")


@contextlib.contextmanager
def run_lock(lake, *, wait: bool = False, argv: list[str] | None = None, console=None):
    """Hold the lake's exclusive run lock (``flock`` on ``_meta/locks/run.lock``) for the body.

    Refuses at once with ``LakeBusy`` naming the holder, or blocks until the holder is done
    when ``wait``. The kernel releases the lock when the process exits or dies."""
    path = run_lock_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _lock_holder(fd)
            if not wait:
                raise LakeBusy(f"another govlake run holds the lake {lake.root}: {describe_holder(holder)}; "
                               f"wait for it or pass --wait (lock file {path})") from None
            if console is not None:
                console.print(f"  waiting for the lake {lake.root}: held by {describe_holder(holder)} …", soft_wrap=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            user = getpass.getuser()
        except Exception:  # pragma: no cover - no passwd entry
            user = str(os.getuid())
        info = {"pid": os.getpid(), "host": socket.gethostname(), "user": user,
                "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "argv": list(sys.argv if argv is None else argv), "lake": str(lake.root)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info, ensure_ascii=False).encode("utf-8"), 0)
        os.fsync(fd)
        try:
            yield info
        finally:
            os.ftruncate(fd, 0)  # a free lock holds no holder (a killed holder's stays: harmless)
    finally:
        os.close(fd)  # releases the flock


def print_summary(results: list[dict], log_file: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from govlake.storage import Lake

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title="Extraction: landing → raw", show_lines=False)
    for col in ("dataset", "files", "ingested", "rows", "skipped", "quarantined", "task"):
        table.add_column(col, justify="right" if col in ("files", "ingested", "rows", "skipped", "quarantined") else "left")
    problems = []
    for res in results:
        if not res["dag_id"].startswith("extract_"):
            continue
        for task_id, state in sorted(res["tasks"].items()):
            s = res["summaries"].get(task_id) or {}
            table.add_row(s.get("dataset", task_id), str(s.get("files", "-")), str(s.get("ingested_files", "-")),
                          str(s.get("rows", "-")), str(s.get("skipped", "-")), str(s.get("quarantined", "-")),
                          state)
            problems.extend(s.get("problems", []))
    console.print(table)
    for p in problems:
        console.print(f"[yellow]quarantined[/yellow] {p['file']}: {p['reason']} — {p['message']}")
    lake = Lake.default()
    tr = next((r for r in results if r["dag_id"] == "transform_shared"), None)
    if tr:
        _print_transform(console, tr, lake)
    if any(r["dag_id"] == "ops_monitor" for r in results):
        from govlake import ops

        c = ops.compute(lake)
        console.print(f"互联互通率 (connectivity rate): {c.rate:.1%} — {c.on_time_departments} of "
                      f"{c.registered_departments} departments on time (details: govlake status)")
        if lake.dashboard_page.exists():
            console.print(f"dashboard: {lake.dashboard_page}")
    console.print(f"raw Parquet: {lake.raw_root}")
    console.print(f"quarantine:  {lake.quarantine_root}")
    if log_file:
        console.print(f"Airflow log: {log_file}")


def _print_transform(console, tr: dict, lake) -> None:
    from rich.table import Table

    ret = tr.get("returns", {})
    std = ret.get("dbt_build_standardized") or {}
    if std.get("counts"):
        t = Table(title="Standardization: raw → standardized + quarantine")
        for col in ("dataset", "raw rows", "standardized", "quarantined", "quarantined by reason"):
            t.add_column(col, justify="left" if col in ("dataset", "quarantined by reason") else "right")
        for c in std["counts"]:
            reasons = ", ".join(f"{k} {v}" for k, v in c["reasons"].items()) or "-"
            t.add_row(c["dataset"], str(c["raw_rows"]), str(c["standardized"]), str(c["quarantined"]), reasons)
        console.print(t)
    pubs = ret.get("publish") or []
    if pubs:
        t = Table(title="Published products")
        for col in ("product", "version", "rows", "path"):
            t.add_column(col)
        for p in pubs:
            if p.get("held"):
                version = f"HELD (gate failed; v={p['version']} stays)" if p["version"] else "HELD (gate failed)"
            else:
                version = f"unchanged (v={p['version']})" if p.get("unchanged") else f"v={p['version']}"
            t.add_row(p["product"], version, str(p.get("rows", "-")), str(lake.current_link(p["product"])))
        console.print(t)
    for task_id in ("gate_standardized", "gate_shared"):
        g = ret.get(task_id)
        if g:
            console.print(f"{task_id}: {'passed' if g['success'] else 'FAILED'} — report {g['report']}; "
                          f"Data Docs {g['docs']}")
            for product, failed in (g.get("held") or {}).items():
                console.print(f"[red]held[/red] {product}: not published, its previous version stays current — "
                              + "; ".join(failed[:3]), highlight=False)
    bad = {t: s for t, s in tr["tasks"].items() if s not in ("success", "skipped")}
    if bad:
        console.print(f"[red]transform_shared did not finish: {bad}[/red]")
    if lake.catalog_index.exists():
        console.print(f"catalog (共享目录): {lake.catalog_index}")
    docs = lake.dbt_docs_page
    if docs.exists():
        console.print(f"dbt docs: {docs}")


def _log_path() -> Path:
    ts = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    return config.work_dir() / "logs" / f"run-{ts}.log"


def cli_run(args) -> int:
    log_file = _log_path()
    try:
        results = run_pipeline(args.date, only=args.only, log_file=log_file, wait=getattr(args, "wait", False))
    except LakeBusy as e:
        print(f"govlake run: {e}", file=sys.stderr)
        return e.exit_code
    print_summary(results, log_file)
    failed = [r for r in results if r["state"] != "success"]
    for r in failed:
        bad = {t: s for t, s in r["tasks"].items() if s not in ("success", "skipped")}
        print(f"FAILED: {r['dag_id']} ({r['state']}): {bad} — see {log_file}", file=sys.stderr)
    return 1 if failed else 0


def cli_demo(args) -> int:
    from govlake_synth import generate
    from govlake.storage import Lake

    lake = Lake.default().ensure()
    print(f"govlake demo: lake at {lake.root}")
    t0 = time.monotonic()
    generate.generate(lake, people=args.people, date=args.date, seed=args.seed,
                      truth_dir=config.work_dir() / "truth" / args.date)
    print(f"generated {args.people} people's deliveries for {args.date} in {time.monotonic() - t0:.1f} s "
          f"under {lake.landing_root}")
    logging.getLogger().setLevel(logging.WARNING)
    from govlake import masking

    key = masking.ensure_local_key()
    rc = cli_run(type("A", (), {"date": args.date, "only": None, "wait": False})())
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    share_rc = 1
    if rc == 0:
        from govlake.sharing.service import demo as sharing_demo

        share_rc = sharing_demo.run(console)
    from govlake import ops

    health = ops.compute(lake)
    print(f"demo finished in {time.monotonic() - t0:.1f} s; join-token key (local, not committed): {key}")
    print("next: govlake serve & then govlake query / govlake verify with a demo client's credentials "
          "(README: 'Analysts and department systems'); govlake catalog; govlake status; govlake audit verify")
    ok = rc == 0 and share_rc == 0 and health.healthy
    if ok:
        console.print(f"[bold green]OK[/bold green] pipeline published, sharing service answered, "
                      f"互联互通率 {health.rate:.1%} ({health.on_time_departments} of "
                      f"{health.registered_departments} departments on time), audit {audit_state(lake)}")
    else:
        console.print(f"[bold red]NOT OK[/bold red] pipeline rc={rc}, sharing demo rc={share_rc}, "
                      f"healthy={health.healthy} — see govlake status")
    return 0 if ok else 1


def audit_state(lake) -> str:
    from govlake import audit

    v = audit.verify(lake)
    return "verified" if v.ok else f"INVALID ({v.reason})"

