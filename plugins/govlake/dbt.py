"""Run dbt in-process (``dbt.cli.main.dbtRunner``) against the lake.

``run_dbt(["build"], lake=lake, build_dir=lake.candidate(run_id))`` sets the environment the
project reads (``GOVLAKE_LAKE_ROOT``, ``GOVLAKE_BUILD_DIR``), points dbt at the project and
profile in ``dbt_project/``, and raises :class:`DbtError` naming every failing node and its
message when anything fails (a model error, a failing test, a compilation error).

Repeated calls in one process
-----------------------------
dbtRunner can be invoked many times in one process (dbt's own docs and tests do so); each call
parses (or partially parses) the project again and opens fresh adapter connections. Things to
know, all handled here:

- dbt keeps a process-global adapter registry and event/logging set-up; they are reset on
  each invocation, but invocations must not run *concurrently* in one process (dbt is not
  re-entrant): a module-level lock serialises them.
- profiles.yml and the source YAML read env vars (``env_var('GOVLAKE_LAKE_ROOT')``,
  ``GOVLAKE_BUILD_DIR``). dbt reads ``os.environ``, so they are set for the duration of the
  call and restored afterwards. Changing an env var that a YAML file reads invalidates
  partial parsing for that file (dbt tracks env vars in the manifest), which costs a re-parse
  of those files but is correct.
- DuckDB allows one writer per database file; a run holds ``<lake>/_meta/govlake.duckdb``
  open for the whole invocation, so callers must not run two dbt invocations on the same lake
  at once (the lock covers one process; the transform DAG keeps one writer across processes).
- dbt-duckdb keeps the DuckDB database open in a process-wide environment after ``invoke``
  returns (the file stays locked); :func:`run_dbt` closes it after every call.
- ``target/`` and ``logs/`` default to the project folder; they are written under the lake's
  ``_meta/dbt/`` instead, so runs on different lakes do not overwrite each other's manifest.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from govlake import config
from govlake.storage import Lake

LAYERS = ("standardized", "shared")  # quarantine_rows is gated with the standardized layer
_LOCK = threading.Lock()


class DbtError(RuntimeError):
    """dbt failed; ``failures`` lists (node, status, message) for every failing node."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]] | None = None):
        super().__init__(message)
        self.failures = failures or []


@dataclass
class DbtRun:
    """What a dbt invocation did: per-node status, timing, and where the outputs are."""

    args: list[str]
    success: bool
    seconds: float
    build_dir: Path
    nodes: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None  # the raw dbtRunnerResult

    def output(self, model: str) -> Path:
        """The Parquet file of a layer output (quarantine_rows, shared products; the stg_ models
        are views in the lake's DuckDB file since ADR 0016)."""
        for layer in LAYERS:
            p = self.build_dir / layer / f"{model}.parquet"
            if p.exists():
                return p
        raise FileNotFoundError(f"no Parquet output for model {model!r} under {self.build_dir}")

    def outputs(self) -> dict[str, Path]:
        return {p.stem: p for layer in LAYERS for p in sorted((self.build_dir / layer).glob("*.parquet"))}


def output_path(build_dir: Path, model: str) -> Path:
    """Where a layer model's Parquet file is written: <build_dir>/<layer>/<model>.parquet."""
    if model.startswith("stg_"):
        layer = "standardized"
    elif model == "quarantine_rows":
        layer = "standardized"
    else:
        layer = "shared"
    return Path(build_dir) / layer / f"{model}.parquet"


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open after an invocation.

    dbt-duckdb holds one process-wide environment (``DuckDBConnectionManager._ENV``) with the
    database open, and keeps it after ``invoke`` returns: the file stays locked against other
    processes and the same process cannot open it with another configuration (e.g.
    read-only). Closing it here makes every run_dbt call self-contained; the next invocation
    opens a fresh one. (Uses a private attribute of dbt-duckdb 1.11; checked in
    tests/integration/test_dbt_models.py, which opens the file read-only after a build.)
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager as mgr
    except ImportError:  # pragma: no cover
        return
    with mgr._LOCK:
        env = mgr._ENV
        mgr._ENV = None
        if env is not None:
            try:
                env.close()
            except Exception:  # closing is best effort; a new environment is created anyway
                pass


def _node_rows(result: Any) -> list[dict[str, Any]]:
    rows = []
    res = getattr(result, "result", None)
    for r in getattr(res, "results", None) or []:
        node = getattr(r, "node", None)
        rows.append({
            "name": getattr(node, "name", None) or getattr(node, "unique_id", "?"),
            "unique_id": getattr(node, "unique_id", None),
            "resource_type": str(getattr(node, "resource_type", "")),
            "status": str(getattr(r, "status", "")),
            "message": getattr(r, "message", None),
            "failures": getattr(r, "failures", None),
            "seconds": float(getattr(r, "execution_time", 0.0) or 0.0),
        })
    return rows


def run_dbt(
    args: list[str],
    *,
    lake: Lake,
    build_dir: Path,
    select: str | None = None,
    exclude: str | None = None,
    vars: dict[str, Any] | None = None,
    raise_on_failure: bool = True,
) -> DbtRun:
    """Run ``dbt <args>`` in-process on ``lake``, writing layer outputs under ``build_dir``.

    ``select`` / ``exclude`` are passed as ``--select`` / ``--exclude``. Raises :class:`DbtError` (unless
    ``raise_on_failure=False``) when the invocation fails, with the failing nodes and messages.
    """
    from dbt.cli.main import dbtRunner  # imported late: dbt import is slow (~2 s)

    build_dir = Path(build_dir).resolve()
    for layer in LAYERS:
        (build_dir / layer).mkdir(parents=True, exist_ok=True)
    lake.meta_root.mkdir(parents=True, exist_ok=True)
    project = config.dbt_project_dir()
    work = lake.dbt_work
    cli = list(args)
    cli += ["--project-dir", str(project), "--profiles-dir", str(project),
            "--target-path", str(work / "target"), "--log-path", str(work / "logs")]
    if select:
        cli += ["--select", select]
    if exclude:
        cli += ["--exclude", exclude]
    if vars:
        import json
        cli += ["--vars", json.dumps(vars)]
    env = {
        "GOVLAKE_LAKE_ROOT": str(Path(lake.root).resolve()),
        "GOVLAKE_BUILD_DIR": str(build_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        "DO_NOT_TRACK": "true",
    }
    started = time.monotonic()
    with _LOCK, _env(env):
        try:
            result = dbtRunner().invoke(cli)
        finally:
            _release_duckdb()
    run = DbtRun(args=cli, success=bool(result.success), seconds=time.monotonic() - started,
                 build_dir=build_dir, nodes=_node_rows(result), result=result)
    if not result.success and raise_on_failure:
        bad = [(n["name"], n["status"], str(n["message"] or "")) for n in run.nodes
               if n["status"] not in ("success", "pass", "skipped", "warn", "RunStatus.Success")]
        if result.exception is not None:
            bad.append(("dbt", "error", str(result.exception)))
        if not bad:
            bad.append(("dbt", "error", "dbt reported failure without a failing node (see "
                        f"{work / 'logs' / 'dbt.log'})"))
        lines = "\n".join(f"  - {name} [{status}]: {msg}" for name, status, msg in bad)
        raise DbtError(f"dbt {' '.join(args)} failed on {len(bad)} node(s):\n{lines}", bad)
    return run
