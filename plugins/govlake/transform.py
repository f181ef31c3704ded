"""The transform stage: dbt build standardized -> gate -> dbt build shared -> gate -> publish.

Each step is a function the transform DAG calls as one task (write-audit-publish):

- dbt writes every layer output as Parquet into the candidate folder of the run,
  ``<lake>/candidate/<run_id>/{standardized,shared}/<model>.parquet``;
- the GX gate validates the candidate; its verdict is kept beside the reports;
- only products whose gate passed are published as ``published/<product>/v=<n>/`` and the
  ``current`` pointer switched; each publication is appended to the audit log and the
  catalog site is rebuilt (by the DAG's publish task: ``govlake.site`` sits above this layer).
  A failed gate raises ``GateFailed`` naming product, suite and failed
  expectations; ``current`` stays, the candidate and the report are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import duckdb

from govlake import audit, config, gate, metadata, products, publish
from govlake.dbt import output_path, run_dbt
from govlake.gate import GateFailed
from govlake.ledger import Ledger
from govlake.ops.gate_history import record_gate_result
from govlake.publish import PublishError
from govlake.storage import Lake, sha256_file

log = logging.getLogger(__name__)

STANDARDIZED_SELECT = "resource_type:seed path:models/staging path:models/quarantine"
SHARED_SELECT = "path:models/intermediate path:models/shared"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_id_for(airflow_run_id: str | None = None) -> str:
    """An ASCII, path-safe run id (from the Airflow run id when there is one)."""
    if not airflow_run_id:
        airflow_run_id = dt.datetime.now(dt.timezone.utc).strftime("adhoc__%Y%m%dT%H%M%S%f")
    return _SAFE.sub("-", airflow_run_id).strip("-")


def staging_models() -> list[str]:
    return [f"stg_{d.dept}__{d.name}" for d in metadata.datasets()]


def shared_products(dbt_dir: Path | None = None) -> list[str]:

    # products dbt builds (a model SQL beside the YAML) and the department resources (one per
    # dataset, models/shared/resources/<name>.sql, docs/adr/0015); others, e.g.
    # department_connectivity, are built by their own DAG
    base = Path(dbt_dir) if dbt_dir else config.dbt_project_dir()
    resource_models = {p.stem for p in (base / "models" / "shared" / "resources").glob("*.sql")}
    return sorted(name for name, p in products.load(dbt_dir).items()
                  if (Path(p.yaml_path).parent / f"{name}.sql").exists()
                  or (p.dataset and name in resource_models))


def _gate_pickle(lake: Lake, run_id: str, layer: str) -> Path:
    return lake.report_dir(run_id, layer) / "gate_result.pickle"


# ------------------------------------------------------------------------------ dbt steps
GATED_TABLE = "main.govlake_gated_batches"  # created by dbt on-run-start (macros/staging/govlake_metadata.sql)


def build_standardized(lake: Lake, run_id: str, *, full_refresh: bool = False) -> dict:
    """Standardize the raw batches not standardized yet (docs/adr/0008): the chk_ tables are
    incremental per batch; this run's stg_ views and quarantine_rows file hold the batches that
    have not passed the standardized gate yet. ``full_refresh`` recomputes every batch (needed
    after a change to the standards macros, the value maps or the source metadata).

    When the dbt project is the one of the last standardized build, only the feeds with a new
    batch are built: the chk_ tables of the other feeds and the seeds are left out
    (:func:`standardized_exclusions`); the stg_ views (cheap) and quarantine_rows always run,
    so the row-conservation test covers every feed."""

    build_dir = lake.candidate(run_id)
    if not full_refresh:
        reason = standardized_up_to_date(lake)
        if reason:  # nothing to standardize: no dbt invocation (seeds, models and tests as last time)
            log.info("standardized build of run %s skipped: %s", run_id, reason)
            return {"seconds": 0.0, "build_dir": str(build_dir), "counts": feed_counts(lake, run_id),
                    "skipped": reason}
    args = ["build", "--indirect-selection", "buildable"]
    fingerprint = project_fingerprint()  # before the build: a project edited meanwhile is rebuilt next time
    exclude = None
    if full_refresh:
        args.append("--full-refresh")
        _clear_gated(lake)
    else:
        exclude = standardized_exclusions(lake, fingerprint)
    run = run_dbt(args, lake=lake, build_dir=build_dir, select=STANDARDIZED_SELECT, exclude=exclude)
    _record_build(lake, STD_BUILDS_TABLE, "fingerprint", run_id, fingerprint)
    q = build_dir / "standardized" / "quarantine_rows.parquet"
    if q.exists():  # the quarantine zone keeps every run's rejected rows
        dest = lake.quarantine_rows_run(run_id)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(q, dest / "quarantine_rows.parquet")
    out = {"seconds": round(run.seconds, 2), "build_dir": str(build_dir), "counts": feed_counts(lake, run_id)}
    if exclude:
        out["excluded"] = exclude
    return out


def standardized_exclusions(lake: Lake, fingerprint: str) -> str | None:
    """What a standardized build can leave out (a dbt ``--exclude``), or None (build all): when
    the last standardized build ran with this dbt project, the seeds (loaded then, unchanged)
    and the chk_ tables of the feeds without a batch to standardize (nothing new to append)."""
    row = _last_build(lake, STD_BUILDS_TABLE, "fingerprint")
    if not row or row[1] != fingerprint:
        return None
    pending = {b.split("/")[0] for b in ungated_batches(lake)}
    idle = [f"chk_{d.dept}__{d.name}" for d in metadata.datasets() if d.id not in pending]
    return " ".join(["resource_type:seed", *idle])


def build_shared(lake: Lake, run_id: str, *, full_refresh: bool = False) -> dict:
    """Bring the shared layer up to date (docs/adr/0010): the int_* tables and the tables behind
    the products are incremental — only the keys touched by batches not incorporated yet (or by
    a change of supersession) are recomputed; a new full snapshot of a feed, a first build or
    ``full_refresh`` recompute everything. The product Parquet files of the run are ordered
    COPYs of those tables. After a complete build the pending touched-key tables are dropped;
    after a failed one they stay and the next build redoes a superset of the keys.

    Only what a changed feed reaches is built (:func:`shared_selection`): when the last complete
    shared build ran with this dbt project, the models downstream of the feeds whose batches or
    ledger entries changed since; every other product file is that build's, linked into this
    run's candidate folder (same inputs, same bytes). Nothing changed: no dbt invocation."""

    build_dir = lake.candidate(run_id)
    inputs = shared_inputs(lake)  # before the build (the build changes none of its inputs)
    state = _state_text(inputs)
    previous = _last_build(lake, SHARED_BUILDS_TABLE, "state")  # the complete build this one continues
    if not full_refresh:
        reused = _reuse_shared_outputs(lake, run_id, state, previous)
        if reused:  # nothing the shared layer reads changed: its outputs are those of that run
            log.info("shared build of run %s skipped: %s", run_id, reused["skipped"])
            return {"seconds": 0.0, "build_dir": str(build_dir), **reused}
    args = ["build", "--indirect-selection", "buildable"]
    plan = None if full_refresh else shared_selection(lake, run_id, inputs, previous)
    if full_refresh:
        args.append("--full-refresh")
    run = run_dbt(args, lake=lake, build_dir=build_dir, select=plan["select"] if plan else SHARED_SELECT)
    out = {"seconds": round(run.seconds, 2), "build_dir": str(build_dir)}
    built = {n["name"] for n in run.nodes}
    if plan:
        kept = [m for m in shared_products() if m not in built]
        _link_files([output_path(lake.candidate(plan["from_run"]), m) for m in kept], build_dir / "shared")
        out.update(changed_feeds=plan["changed"], reused_from=plan["from_run"], reused=kept)
    if previous and not full_refresh and inputs and (_state_value(previous[1]) or {}).get("base") == inputs["base"]:
        # (same dbt project and versions as the build this one continues: the rows of the keys
        # not recomputed are that build's; after a project change every product is validated whole)
        out["touched"] = _save_touched_keys(lake, run_id, [m for m in shared_products() if m in built], previous[0])
    _clear_pending(lake)
    if state:
        _record_build(lake, SHARED_BUILDS_TABLE, "state", run_id, state)
    return out


def shared_selection(lake: Lake, run_id: str, inputs: dict | None,
                     previous: tuple[str, str] | None) -> dict | None:
    """The dbt selection of a shared build that builds only what changed, or None (build all):
    when the last complete shared build (``previous``: run id, recorded state) had the same dbt
    project and versions (``base``) and its product files are still there, the feeds whose inputs differ (``feeds``: ledger entries and
    gated batches) select their int_ model and everything downstream (``int_<feed>+``), plus
    int_superseded_batches (the ledger's supersessions, read by every int_ model)."""
    prev = _state_value(previous[1]) if inputs and previous else None
    if not prev or prev.get("base") != inputs["base"] or not _outputs_reusable(lake, run_id, previous[0]):
        return None
    changed = sorted(f for f, d in inputs["feeds"].items() if prev.get("feeds", {}).get(f) != d)
    if not changed:
        return None  # (the outputs are reused whole before this is asked)
    models = ["int_superseded_batches"] + [f"int_{f.replace('.', '__')}+" for f in changed]
    return {"select": " ".join(models), "changed": changed, "from_run": previous[0]}


def _outputs_reusable(lake: Lake, run_id: str, build_run: str) -> bool:
    """Whether the shared build of run ``build_run`` (another run) left every product file."""
    return build_run != run_id and all(output_path(lake.candidate(build_run), m).is_file()
                                       for m in shared_products())


def touched_dir(lake: Lake, run_id: str) -> Path:
    """Where a shared build leaves, per product, the keys it recomputed (for a scoped gate)."""
    return lake.candidate(run_id) / "touched"


def _backing_tables(lake: Lake) -> dict[str, str]:
    """product -> the one incremental int_ table its file is a COPY of (dbt's manifest)."""
    path = lake.dbt_work / "target" / "manifest.json"
    nodes = json.loads(path.read_text(encoding="utf-8")).get("nodes", {}) if path.is_file() else {}
    out = {}
    for n in nodes.values():
        if n.get("resource_type") != "model":
            continue
        ints = [d.split(".")[-1] for d in (n.get("depends_on") or {}).get("nodes", [])
                if d.split(".")[-1].startswith("int_") and d.startswith("model.")]
        if len(ints) == 1:
            out[n["name"]] = ints[0]
    return out


def _save_touched_keys(lake: Lake, run_id: str, built: list[str], after_run: str) -> dict[str, int]:
    """For each product this build rebuilt from an int_ table that recomputed only some keys
    (not pending a full rebuild), write those keys to ``touched/<product>.parquet`` with
    ``<product>.json`` (the key columns, how many, and the complete build this one continued:
    ``after_run``). Returns product -> number of touched keys."""
    backing = _backing_tables(lake)
    folder = touched_dir(lake, run_id)
    out = {}
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        full = {r[0] for r in con.execute(f"select model from {PENDING_FULL_TABLE}").fetchall()}
        tables = {r[0] for r in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'main' and starts_with(table_name, ?)",
            [PENDING_PREFIX + "keys__"]).fetchall()}
        for product in built:
            model = backing.get(product)
            table = f"{PENDING_PREFIX}keys__{model}"
            if not model or model in full or table not in tables:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            keys = [r[0] for r in con.execute(f'describe main."{table}"').fetchall()]
            dest = folder / f"{product}.parquet"
            con.execute(f"copy (select distinct * from main.\"{table}\") to '{dest}' (format parquet)")
            n = con.execute(f"select count(*) from read_parquet('{dest}')").fetchone()[0]
            (folder / f"{product}.json").write_text(json.dumps(
                {"product": product, "model": model, "keys": keys, "count": n, "after_run": after_run}),
                encoding="utf-8")
            out[product] = n
    finally:
        con.close()
    return out


def _link_files(files: list[Path], dest_dir: Path) -> None:
    """Hard-link (or copy, across file systems) ``files`` into ``dest_dir``, replacing any file
    of the same name: a build's outputs reused by a later run (same inputs, same bytes)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for f in files:
        dest = dest_dir / f.name
        if dest.exists():
            dest.unlink()
        try:
            os.link(f, dest)
        except OSError:
            shutil.copy2(f, dest)


SHARED_BUILDS_TABLE = "main.govlake_shared_builds"


def shared_inputs(lake: Lake) -> dict | None:
    """Digests of everything a complete shared build reads: ``base`` — the dbt project (models,
    macros, seeds) and the dbt/DuckDB versions; ``feeds`` — per feed, its ledger entries
    (batches, supersessions: raw/_ledger.parquet) and its batches that passed the standardized
    gate (the chk_ rows the int_ models take). ``None`` when they cannot stand for the layer's
    state: batches not gated yet (the standardized layer is not up to date) or touched-key
    bookkeeping of an unfinished build."""
    from importlib.metadata import version

    fingerprint = project_fingerprint()
    if not standardized_up_to_date(lake, fingerprint):
        return None
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        pending = con.execute(
            "select count(*) from duckdb_tables() where schema_name = 'main' and starts_with(table_name, ?)",
            [PENDING_PREFIX]).fetchone()[0]
        try:
            pending += con.execute(f"select count(*) from {PENDING_FULL_TABLE}").fetchone()[0]
        except duckdb.CatalogException:
            pass
        gated = con.execute(f"select dept, dataset, batch_id from {GATED_TABLE} order by all").fetchall()
    finally:
        con.close()
    if pending:
        return None
    base = hashlib.sha256()
    base.update(fingerprint.encode())
    base.update(f"duckdb {duckdb.__version__} dbt-core {version('dbt-core')} dbt-duckdb {version('dbt-duckdb')}".encode())
    feeds = {d.id: hashlib.sha256() for d in metadata.datasets()}
    for e in sorted(Ledger(lake).all(), key=lambda e: (e.dept, e.dataset, e.batch_id or "", e.source_file)):
        h = feeds.setdefault(f"{e.dept}.{e.dataset}", hashlib.sha256())
        h.update(json.dumps([e.dept, e.dataset, e.batch_id, e.status, e.superseded_by, e.delivery_date,
                             e.source_file, e.sha256, e.rows], default=str).encode("utf-8"))
    for dept, dataset, batch in gated:
        feeds.setdefault(f"{dept}.{dataset}", hashlib.sha256()).update(f"gated {batch}\n".encode("utf-8"))
    return {"base": base.hexdigest(), "feeds": {f: h.hexdigest() for f, h in sorted(feeds.items())}}


def shared_state(lake: Lake) -> str | None:
    """:func:`shared_inputs` as the text a shared build records (None: no reusable state)."""
    return _state_text(shared_inputs(lake))


def _state_text(inputs: dict | None) -> str | None:
    return json.dumps(inputs, sort_keys=True) if inputs else None


def _state_value(text: str | None) -> dict | None:
    try:
        v = json.loads(text or "")
    except ValueError:
        return None  # recorded by an earlier version (one digest): not comparable per feed
    return v if isinstance(v, dict) and "base" in v and "feeds" in v else None


def _record_build(lake: Lake, table: str, column: str, run_id: str, value: str) -> None:
    """Record a complete build and the state it was made from (``table``: run_id, ``column``, built_at)."""
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        con.execute(f"create table if not exists {table} (run_id varchar, {column} varchar, built_at timestamp)")
        con.execute(f"insert into {table} values (?, ?, current_timestamp)", [run_id, value])
    finally:
        con.close()


def _last_build(lake: Lake, table: str, column: str) -> tuple[str, str] | None:
    """(run_id, state) of the latest build recorded in ``table`` (None: none yet)."""
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        return con.execute(f"select run_id, {column} from {table} "
                           "order by built_at desc, rowid desc limit 1").fetchone()
    except duckdb.CatalogException:
        return None
    finally:
        con.close()


def _reuse_shared_outputs(lake: Lake, run_id: str, state: str | None,
                          previous: tuple[str, str] | None) -> dict | None:
    """When the shared layer's inputs are those of the last complete shared build (``previous``:
    run id, recorded :func:`shared_state`) and that build's output files are still in its
    candidate folder, link (or copy) them into this run's candidate folder instead of running
    dbt: the same inputs give the same bytes (outputs are ordered COPYs). ``None``: build."""
    row = previous
    if not state or not row or row[1] != state or not _outputs_reusable(lake, run_id, row[0]):
        return None
    files = sorted((lake.candidate(row[0]) / "shared").glob("*.parquet"))
    _link_files(files, lake.candidate(run_id) / "shared")
    (lake.candidate(run_id) / "standardized").mkdir(parents=True, exist_ok=True)
    return {"skipped": (f"nothing the shared layer reads changed since run {row[0]} (same dbt project, "
                        "ledger and gated batches): its outputs are reused"),
            "reused_from": row[0], "files": [f.name for f in files]}


STD_BUILDS_TABLE = "main.govlake_standardized_builds"
_FINGERPRINT_SKIP = {"target", "logs", "dbt_packages", ".user.yml", "__pycache__"}


def project_fingerprint(dbt_dir: Path | None = None) -> str:
    """SHA-256 over every file of the dbt project (models, macros, seeds, tests, source YAML,
    dbt_project.yml, profiles.yml), names and bytes: a standardized build is only skipped when
    the project is the one the last complete build ran with."""
    base = Path(dbt_dir) if dbt_dir else config.dbt_project_dir()
    h = hashlib.sha256()
    for f in sorted(base.rglob("*")):
        rel = f.relative_to(base)
        if not f.is_file() or _FINGERPRINT_SKIP & set(rel.parts):
            continue
        h.update(rel.as_posix().encode("utf-8") + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def ungated_batches(lake: Lake) -> list[str]:
    """``dept.dataset/batch_id`` of every ingested batch (superseded or not: the stg_ models
    hold every batch not gated yet) that has not passed the standardized gate."""
    entries = [e for e in Ledger(lake).all() if e.status == "ingested"]
    if not entries:
        return []
    gated: set[tuple[str, str, str]] = set()
    if lake.duckdb_path.exists():
        con = duckdb.connect(str(lake.duckdb_path))
        try:
            gated = {tuple(r) for r in con.execute(f"select dept, dataset, batch_id from {GATED_TABLE}").fetchall()}
        except duckdb.CatalogException:
            pass
        finally:
            con.close()
    return sorted(f"{e.dept}.{e.dataset}/{e.batch_id}" for e in entries
                  if (e.dept, e.dataset, e.batch_id) not in gated)


def standardized_up_to_date(lake: Lake, fingerprint: str | None = None) -> str | None:
    """Why the standardized build can be skipped, or None (build): every ingested batch has
    passed the standardized gate (so the stg_ files and quarantine_rows would be empty) and the
    last standardized build ran with this dbt project (same seeds, macros, models and tests)."""
    if not lake.duckdb_path.exists() or ungated_batches(lake):
        return None
    row = _last_build(lake, STD_BUILDS_TABLE, "fingerprint")
    if not row or row[1] != (fingerprint or project_fingerprint()):
        return None
    return f"no batch to standardize (every ingested batch passed the standardized gate) and the dbt project is the one of run {row[0]}"


INT_BATCHES_TABLE = "main.govlake_int_batches"  # created by dbt on-run-start (macros/staging/govlake_incremental.sql)
PENDING_FULL_TABLE = "main.govlake_pending_full"
PENDING_PREFIX = "glx_pending_"


def _clear_pending(lake: Lake) -> None:
    """Drop the touched-key bookkeeping of a completed shared build."""
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        names = [r[0] for r in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'main' and starts_with(table_name, ?)",
            [PENDING_PREFIX]).fetchall()]
        for n in names:
            con.execute(f'drop table main."{n}"')
        con.execute(f"delete from {PENDING_FULL_TABLE}")  # (created by dbt on-run-start)
    finally:
        con.close()


# ------------------------------------------------------------------------------ gates
def gate_layer(lake: Lake, run_id: str, layer: str, models: list[str] | dict, *, dag_id: str | None = None,
               task_id: str | None = None, raise_on_failure: bool = True):
    """Validate the layer's candidates (``models``: names of Parquet outputs of the run, or
    model -> Parquet file / ``gate.LakeRelation``); record the verdicts; raise GateFailed on
    failure (unless ``raise_on_failure`` is false: the shared layer holds failing products one
    by one in :func:`publish_layer` while the others publish)."""

    build_dir = lake.candidate(run_id)
    tables = models if isinstance(models, dict) else {m: output_path(build_dir, m) for m in models}
    result = gate.validate(lake, layer, tables, run_id)
    for sr in result.suite_results.values():
        record_gate_result(lake, run_id=run_id, layer=layer, model=sr.model, suite=sr.suite,
                               success=sr.success, failed=[f.describe() for f in sr.failed],
                               dag_id=dag_id, task_id=task_id)
    path = _gate_pickle(lake, run_id, layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(result))
    if raise_on_failure:
        result.raise_for_failure(f"{layer} layer")
    return result


def run_batches(lake: Lake, run_id: str) -> dict[str, list[str]]:
    """dept.dataset -> batch ids this run standardized: those with valid rows in the feed's stg_
    view (the chk_ rows of batches not gated yet), with rows in the run's quarantine_rows file,
    or recorded as gated by this run (so the answer holds before and after the gate)."""

    build_dir = lake.candidate(run_id)
    out: dict[str, set[str]] = {}
    if lake.duckdb_path.exists():
        con = duckdb.connect(str(lake.duckdb_path), read_only=True)
        try:
            for ds in metadata.datasets():
                try:
                    out.setdefault(ds.id, set()).update(r[0] for r in con.execute(
                        f'select distinct _batch_id from main."stg_{ds.dept}__{ds.name}"').fetchall())
                except duckdb.CatalogException:
                    pass  # no standardized build yet
            try:
                for dept, dataset, b in con.execute(
                        f"select dept, dataset, batch_id from {GATED_TABLE} where run_id = ?", [run_id]).fetchall():
                    out.setdefault(f"{dept}.{dataset}", set()).add(b)
            except duckdb.CatalogException:
                pass
        finally:
            con.close()
    q = output_path(build_dir, "quarantine_rows")
    if q.exists():
        con = duckdb.connect()
        for dept, dataset, b in con.execute(
                f"select distinct dept, dataset, _batch_id from read_parquet('{q}')").fetchall():
            out.setdefault(f"{dept}.{dataset}", set()).add(b)
    return {k: sorted(v) for k, v in sorted(out.items()) if v}


def standardized_rows(lake: Lake, run_id: str, ds: metadata.Dataset):
    """The standardized rows a run produced for a feed, as an Arrow table: the valid chk_ rows
    of the batches the run standardized (:func:`run_batches`), with the columns of its stg_
    view (data elements, then lineage: govlake_stage). What the run's gate validated, before or
    after it (once gated, the view itself is empty)."""
    batches = run_batches(lake, run_id).get(ds.id, [])
    con = duckdb.connect(str(lake.duckdb_path), read_only=True)
    try:
        cols = ", ".join(f'"{r[0]}"' for r in con.execute(f'describe main."stg_{ds.dept}__{ds.name}"').fetchall())
        return con.sql(f'select {cols} from main."chk_{ds.dept}__{ds.name}" where len(_errors) = 0 '
                       "and list_contains($batches, _batch_id) order by _batch_id, _source_file, _row_number",
                       params={"batches": batches}).to_arrow_table()
    finally:
        con.close()


def standardized_candidates(lake: Lake, run_id: str,
                            batches: dict[str, list[str]] | None = None) -> dict[str, gate.LakeRelation]:
    """stg_ model -> its view in the lake's DuckDB file, for the feeds with valid rows not gated
    yet: the standardized layer's candidates are gated where dbt left them (the chk_ rows), never
    written out as Parquet (issue 16: one pass less over the data). The view's rows are those of
    the run's batches; naming them as constants too lets DuckDB skip the row groups of every
    other batch of the chk_ table (each batch is appended whole) in each of the gate's queries."""
    out = {}
    batches = run_batches(lake, run_id) if batches is None else batches
    con = duckdb.connect(str(lake.duckdb_path), read_only=True)
    try:
        for m, ds in zip(staging_models(), metadata.datasets()):
            ids = batches.get(ds.id)
            if not ids:
                continue
            where = "_batch_id in (" + ", ".join("'" + b.replace("'", "''") + "'" for b in ids) + ")"
            try:
                if con.execute(f'select 1 from main."{m}" where {where} limit 1').fetchone():
                    out[m] = gate.LakeRelation(lake.duckdb_path, m, where)
            except duckdb.CatalogException:
                pass
    finally:
        con.close()
    return out


def _clear_gated(lake: Lake) -> None:
    if not lake.duckdb_path.exists():
        return
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        # a re-standardized chk_ table invalidates what the incremental shared layer incorporated:
        # without a record the next shared build recomputes every int_ table (docs/adr/0010)
        for table in (GATED_TABLE, INT_BATCHES_TABLE):
            try:
                con.execute(f"delete from {table}")
            except duckdb.CatalogException:
                pass
    finally:
        con.close()


def _record_gated(lake: Lake, run_id: str, batches: dict[str, list[str]]) -> None:
    con = duckdb.connect(str(lake.duckdb_path))
    try:
        con.execute(f"create table if not exists {GATED_TABLE} (dept varchar, dataset varchar, batch_id varchar, "
                    "run_id varchar, gated_at timestamp)")
        rows = [(fid.split(".")[0], fid.split(".")[1], b, run_id) for fid, bs in batches.items() for b in bs]
        if rows:
            con.executemany(f"insert into {GATED_TABLE} values (?, ?, ?, ?, current_timestamp)", rows)
    finally:
        con.close()


def gate_standardized(lake: Lake, run_id: str, **kw):
    """Validate this run's standardized outputs: the stg_ views that have rows (the valid chk_
    rows of batches not gated yet; feeds with no new batch have none: nothing new to validate)
    and quarantine_rows. On success the batches are recorded as gated, so later runs neither
    rewrite nor revalidate them (and the stg_ views are empty)."""

    build_dir = lake.candidate(run_id)
    batches = run_batches(lake, run_id)
    if not batches and not output_path(build_dir, "quarantine_rows").exists():
        reason = standardized_up_to_date(lake)
        if reason:  # the build was skipped: nothing new to validate, no suite runs
            log.info("standardized gate of run %s skipped: %s", run_id, reason)
            result = gate.carried_result(lake, "standardized", run_id, [], None, {})
            _gate_pickle(lake, run_id, "standardized").write_bytes(pickle.dumps(result))
            return result
    tables = {**standardized_candidates(lake, run_id, batches),
              "quarantine_rows": output_path(build_dir, "quarantine_rows")}
    result = gate_layer(lake, run_id, "standardized", tables, **kw)
    _record_gated(lake, run_id, batches)
    return result


def gate_shared(lake: Lake, run_id: str, *, dag_id: str | None = None, task_id: str | None = None):
    """Validate every product; each is gated on its own. A failing product does not stop the
    others: :func:`publish_layer` holds it (its current version stays) and :func:`raise_if_held`
    then fails the run, naming it.

    A product whose candidate would publish nothing new (:func:`unchanged_publication`: same
    bytes and same inputs as its current version) is not validated again when the current
    version's verdict still holds (:func:`carried_verdict`): that verdict is carried into this
    run's result with the reason, and the gate history records the suite as skipped."""

    models = shared_products()
    build_dir = lake.candidate(run_id)
    inputs_of = _product_inputs(lake)
    carried = {}
    for m in models:
        sr = carried_verdict(lake, m, output_path(build_dir, m), inputs_of(m))
        if sr is not None:
            carried[m] = sr
    to_run = [m for m in models if m not in carried]
    validated = None
    if to_run:
        tables = {m: scoped_candidate(lake, run_id, m) or output_path(build_dir, m) for m in to_run}
        validated = gate.validate(lake, "shared", tables, run_id)
    result = gate.carried_result(lake, "shared", run_id, models, validated, carried)
    for sr in result.suite_results.values():
        record_gate_result(lake, run_id=run_id, layer="shared", model=sr.model, suite=sr.suite,
                           success=sr.success, failed=[f.describe() for f in sr.failed],
                           dag_id=dag_id, task_id=task_id, skipped=sr.skipped)
    path = _gate_pickle(lake, run_id, "shared")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(result))
    if carried:
        log.info("shared gate of run %s: %d of %d suites not run (unchanged products): %s", run_id,
                 len(carried), len(models), ", ".join(carried))
    return result


def scoped_candidate(lake: Lake, run_id: str, product: str) -> gate.Scoped | None:
    """The product's candidate as a ``gate.Scoped`` one (its rows of the touched keys validated,
    the table-level expectations on the whole file), when that gives the verdict a whole
    validation would: the build recomputed only those keys (``touched/<product>.json``) and
    continued the complete build whose file for the product is the one the current version was
    published from (same file: every other row is a row that version's suite passed), that
    verdict passed with the same reviewed suite, and the suite's only date parameter is an upper
    bound (``gate.verdict_holds_later``). ``None``: validate the whole file."""
    folder = touched_dir(lake, run_id)
    meta_path, keys_path = folder / f"{product}.json", folder / f"{product}.parquet"
    if not meta_path.is_file() or not keys_path.is_file() or lake.current_version(product) is None:
        return None
    info = json.loads(meta_path.read_text(encoding="utf-8"))
    manifest = lake.manifest(product) or {}
    published_from = Path(manifest.get("candidate") or "")
    before = output_path(lake.candidate(info["after_run"]), product)
    try:
        same_file = published_from.is_file() and before.is_file() and os.path.samefile(published_from, before)
    except OSError:
        same_file = False
    if not same_file or _verdict_stands(manifest, product) is None:
        return None
    return gate.Scoped(
        path=output_path(lake.candidate(run_id), product), touched=keys_path, keys=tuple(info["keys"]),
        why=(f"rows of the {info['count']:,} keys this build recomputed ({', '.join(info['keys'])}); "
             f"every other row is v{manifest['version']}'s (run {manifest.get('run_id')}), whose gate "
             "stands; table-level expectations on the whole file"))


def _verdict_stands(manifest: dict, product: str) -> tuple[dict, dict, dict] | None:
    """(gate report, the product's suite result in it, the reviewed suite) of the version
    ``manifest`` describes, when that verdict holds today: it passed with no failed expectation,
    its report is still there, the reviewed suite is the one that ran (``gate.suite_sha256``) and
    its only date parameter is an upper bound (``gate.verdict_holds_later``). ``None`` otherwise."""
    verdict = manifest.get("gate") or {}
    if not verdict.get("success") or not verdict.get("json_path"):
        return None
    try:
        report = json.loads(Path(verdict["json_path"]).read_text(encoding="utf-8"))
        prev = report["suites"][product]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the report of that gate is gone: run the suite
    try:
        doc = gate.load_suite_json("shared", product)
        same_suite = prev.get("suite_sha256") == gate.suite_sha256("shared", product)
    except gate.GateError:
        return None
    if not prev.get("success") or prev.get("failed") or not same_suite or not gate.verdict_holds_later(doc):
        return None
    return report, prev, doc


def carried_verdict(lake: Lake, product: str, candidate: Path, inputs: list[dict]):
    """The current version's passing verdict, as this run's (a ``SuiteResult`` with
    ``skipped`` set), when validating ``candidate`` again cannot change it: the candidate has
    the bytes the current version was published from and the same inputs
    (:func:`unchanged_publication`), the reviewed suite is the one that ran
    (``gate.suite_sha256``) and its only date parameter is an upper bound
    (``gate.verdict_holds_later``). ``None`` otherwise: the suite runs."""

    manifest = unchanged_publication(lake, product, candidate, inputs)
    stands = _verdict_stands(manifest, product) if manifest is not None else None
    if stands is None:
        return None
    report, prev, doc = stands
    version = int(manifest["version"])
    return gate.SuiteResult(
        model=product, suite=prev.get("suite") or doc["name"], success=True,
        evaluated=int(prev.get("evaluated") or 0), failed=[], table=str(candidate),
        row_count=prev.get("row_count"), docs_page=prev.get("docs_page"), suite_sha256=prev["suite_sha256"],
        skipped=(f"unchanged: same bytes and inputs as v{version}, whose gate "
                 f"(run {report.get('run_id')}) stands"))


def _product_inputs(lake: Lake):
    """product -> the live inputs it reads (the ``inputs`` its publication records)."""
    inputs = live_inputs(lake)
    sources = product_sources(lake)

    def of(product: str) -> list[dict]:
        used = sources.get(product)
        return [i for i in inputs if used is None or f"{i['dept']}.{i['dataset']}" in used]

    return of


def held_products(result) -> dict[str, list[str]]:
    """product -> its failed expectations (with sample values), for products whose gate failed."""
    return {m: [f.describe() for f in r.failed] for m, r in sorted(result.suite_results.items()) if not r.success}


# ------------------------------------------------------------------------------ publish
def live_inputs(lake: Lake) -> list[dict]:
    """The deliveries the current build reads: snapshot feeds -> latest delivery date's live
    batches plus change files (``.delta.``) delivered on or after it; incremental feeds -> every
    live batch (superseded batches excluded). Same rule as macros/staging/govlake_dedup.sql."""
    out = []
    entries = Ledger(lake).all()
    for ds in metadata.datasets():
        live = [e for e in entries if e.dept == ds.dept and e.dataset == ds.name
                and e.status == "ingested" and not e.superseded_by]
        if ds.delivery == "snapshot" and live:
            full = [e for e in live if ".delta." not in e.source_file]
            latest = max((e.delivery_date for e in full), default="")
            live = [e for e in live if (e.delivery_date == latest and ".delta." not in e.source_file)
                    or (e.delivery_date >= latest and ".delta." in e.source_file)]
        out += [{"dept": e.dept, "dataset": e.dataset, "batch_id": e.batch_id, "delivery_date": e.delivery_date,
                 "source_file": e.source_file, "sha256": e.sha256, "rows": e.rows} for e in live]
    return out


def product_sources(lake: Lake) -> dict[str, set[str]]:
    """dept.dataset each shared model reads, from dbt's manifest (transitively)."""
    manifest = lake.dbt_target / "manifest.json"
    if not manifest.exists():
        return {}
    m = json.loads(manifest.read_text(encoding="utf-8"))
    parents = m.get("parent_map", {})
    products = set(shared_products())  # once: it parses every model YAML (~0.1 s a call)
    out: dict[str, set[str]] = {}

    def walk(uid, acc, seen):
        for p in parents.get(uid, []):
            if p in seen:
                continue
            seen.add(p)
            if p.startswith("source."):
                _, _, src, tbl = p.split(".", 3)
                acc.add(f"{src}.{tbl}")
            else:
                walk(p, acc, seen)

    for uid in parents:
        if uid.startswith("model.") and uid.split(".")[-1] in products:
            acc: set[str] = set()
            walk(uid, acc, set())
            out[uid.split(".")[-1]] = acc
    return out


def _canonical_inputs(inputs: list) -> list[str]:
    return sorted(json.dumps(i, sort_keys=True, ensure_ascii=False, default=str) for i in inputs or [])


def unchanged_publication(lake: Lake, product: str, candidate_file: Path, inputs: list[dict]) -> dict | None:
    """The current version's manifest if publishing ``candidate_file`` with ``inputs`` would add
    nothing: the candidate's SHA-256 equals the current file's (``files[0].sha256``) and the
    inputs are the same deliveries. ``None`` otherwise (no current version, other bytes or
    other inputs: publish).

    An encrypted current file (docs/adr/0014) never has the candidate's bytes (random nonces):
    its plain bytes are those of the candidate it was published from (``candidate`` in the
    manifest, kept in the candidate zone), compared when that file is still there with the
    recorded row count; without it the product is published again."""

    if lake.current_version(product) is None:
        return None
    manifest = lake.manifest(product)
    files = (manifest or {}).get("files") or []
    if not manifest or len(files) != 1 or not files[0].get("sha256") or not Path(candidate_file).is_file():
        return None
    if _canonical_inputs(manifest.get("inputs")) != _canonical_inputs(inputs):
        return None
    expected = files[0]["sha256"]
    if files[0].get("encrypted") or manifest.get("encryption"):
        import pyarrow.parquet as pq

        published_from = Path(manifest.get("candidate") or "")
        if not published_from.is_file() or published_from.resolve() == Path(candidate_file).resolve():
            return None
        try:
            if pq.read_metadata(published_from).num_rows != manifest.get("row_count"):
                return None
        except Exception:  # not a readable plain Parquet file: publish
            return None
        expected = _sha256(published_from)
    digest = _sha256(Path(candidate_file))
    return manifest if digest == expected else None


_DIGESTS: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """sha256_file, remembered per (file, size, mtime) in this process: the shared gate and the
    publish step of one run compare the same candidate files."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        if len(_DIGESTS) > 256:
            _DIGESTS.clear()
        _DIGESTS[key] = sha256_file(Path(path))
    return _DIGESTS[key]


def refuse_withheld(product: str, candidate: Path, meta) -> None:
    """A column the product metadata declares withheld (``withheld: true``, docs/adr/0015) must
    not be in the file to publish: raise PublishError naming product, column and file."""

    withheld = {c.name for c in getattr(meta, "withheld", ())}
    if not withheld or not Path(candidate).is_file():
        return
    con = duckdb.connect()
    try:
        names = {r[0] for r in con.execute("select name from parquet_schema(?)", [str(candidate)]).fetchall()}
    finally:
        con.close()
    leaked = sorted(withheld & names)
    if leaked:
        raise PublishError(f"refusing to publish {product}: column(s) {', '.join(leaked)} are declared "
                           f"withheld in {meta.yaml_path} but are in {candidate}")


def publish_layer(lake: Lake, run_id: str) -> list[dict]:
    """Publish every shared product whose gate passed; audit each. The caller then rebuilds the
    catalog site (``govlake.site.build_site``), also when all are unchanged: the catalog shows
    the audit anchor.

    A product whose gated candidate is byte-identical to its current version, built from the
    same inputs, gets no new version: the audit log gets a ``publication_unchanged`` note and
    the product is reported with ``"unchanged": True``."""

    gate_result = pickle.loads(_gate_pickle(lake, run_id, "shared").read_bytes())
    inputs_of = _product_inputs(lake)
    published = []
    meta = products.load()
    held = held_products(gate_result)
    for product in shared_products():
        if product in held:  # held: its previous version stays current; the others publish
            published.append({"product": product, "version": lake.current_version(product), "held": True,
                              "failed": held[product]})
            log.error("%s held: its gate failed: %s", product, "; ".join(held[product]))
            continue
        p_inputs = inputs_of(product)
        candidate = output_path(lake.candidate(run_id), product)
        refuse_withheld(product, candidate, meta.get(product))
        sr = gate_result.suite_results.get(product)
        current = unchanged_publication(lake, product, candidate, p_inputs) if sr is not None and sr.success else None
        if current is None and sr is not None and getattr(sr, "skipped", None):
            # its suite did not run because it was unchanged: never publish on a carried verdict
            raise PublishError(f"refusing to publish {product} in run {run_id}: its gate was skipped "
                               f"({sr.skipped}) but its candidate {candidate} or its inputs changed since; "
                               "run the shared gate again")
        if current is not None:
            version = int(current["version"])
            audit.append(lake, "note", {"event": "publication_unchanged", "product": product, "version": version,
                                        "run_id": run_id, "sha256": current["files"][0]["sha256"],
                                        "row_count": current.get("row_count"), "actor": audit.actor()})
            published.append({"product": product, "version": version, "rows": current.get("row_count"),
                              "unchanged": True})
            log.info("%s unchanged: current v=%s has the same bytes and inputs", product, version)
            continue
        # the publication's audit entry is durable before ``current`` switches (no live version
        # without its record); if the audit cannot be written, the new version is not made live
        pub = publish.gate_and_publish(lake, product, candidate, run_id=run_id, inputs=p_inputs,
                                       gate_result=gate_result,
                                       before_switch=lambda record: audit.record_publication(lake, record,
                                                                                             sign=False))
        published.append({"product": product, "version": int(pub), "rows": pub.record["row_count"]})
        log.info("published %s v=%s (%s rows)", product, int(pub), pub.record["row_count"])
    if any(not p.get("unchanged") and not p.get("held") for p in published):
        # one signed checkpoint for the run's publications, exported to every witness
        audit.checkpoint(lake, "publication " + ", ".join(
            f"{p['product']} v{p['version']}" for p in published if not p.get("unchanged") and not p.get("held")))
    return published


def raise_if_held(lake: Lake, run_id: str) -> dict:
    """Fail (after the others published) when some product's gate failed, naming each held
    product, its suite, the failed expectations and sample values."""

    result = pickle.loads(_gate_pickle(lake, run_id, "shared").read_bytes())
    held = held_products(result)
    if held:
        raise GateFailed(result.only(list(held)))
    return {"held": {}}


def build_docs(lake: Lake, run_id: str) -> str:
    """dbt docs (lineage graph, model and column docs) as one self-contained page in the catalog
    folder: ``<lake>/catalog/dbt_docs.html`` (``dbt docs generate --static``, works offline)."""

    run_dbt(["docs", "generate", "--static"], lake=lake, build_dir=lake.candidate(run_id))
    src = lake.dbt_target / "static_index.html"
    dest = lake.dbt_docs_page
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest)


# ------------------------------------------------------------------------------ reporting
def feed_counts(lake: Lake, run_id: str) -> list[dict]:
    """Per feed: raw rows in, standardized rows (the valid chk_ rows), quarantined rows by rule,
    over the batches this run standardized (every batch on a first build; only new ones afterwards)."""
    build = lake.candidate(run_id) / "standardized"
    con = duckdb.connect()
    out = []
    qfile = build / "quarantine_rows.parquet"
    batches = run_batches(lake, run_id)
    lake_con = duckdb.connect(str(lake.duckdb_path), read_only=True) if batches else None
    try:
        for ds in metadata.datasets():
            raw_n = stg_n = 0
            ids = batches.get(ds.id, [])
            files = [str(f) for b in ids for f in sorted(lake.raw_batch(ds.dept, ds.name, b).glob("*.parquet"))]
            if files:
                raw_n = con.execute("select sum(num_rows) from parquet_file_metadata(?)", [files]).fetchone()[0]
            if ids:
                stg_n = lake_con.execute(
                    f'select count(*) from main."chk_{ds.dept}__{ds.name}" where len(_errors) = 0 '
                    "and list_contains(?, _batch_id)", [ids]).fetchone()[0]
            reasons = {}
            q_rows = 0
            if qfile.exists():
                reasons = dict(con.execute(
                    f"select rule, count(distinct (_source_file, _row_number)) from read_parquet('{qfile}') "
                    f"where dept = ? and dataset = ? group by rule order by 2 desc", [ds.dept, ds.name]).fetchall())
                q_rows = con.execute(
                    f"select count(distinct (_batch_id, _row_number)) from read_parquet('{qfile}') "
                    f"where dept = ? and dataset = ?", [ds.dept, ds.name]).fetchone()[0]
            out.append({"dataset": ds.id, "raw_rows": raw_n, "standardized": stg_n, "quarantined": q_rows,
                        "reasons": reasons})
    finally:
        if lake_con is not None:
            lake_con.close()
    return out
