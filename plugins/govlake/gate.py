"""Great Expectations gates: validate a candidate layer, pushed down to DuckDB.

Suites are reviewed JSON files, one per model: ``expectations/<layer>/<model>.json`` (GX 1.x
``ExpectationSuite`` JSON). ``validate`` runs every model of a layer through GX's SQL
execution engine on DuckDB, reading each candidate where it is (no pandas frame, no copy:
memory stays flat as tables grow): a Parquet file (shared products, quarantine_rows) or a
relation of the lake's DuckDB file opened read-only (``LakeRelation``: the standardized rows of
a feed, a view over its ``chk_`` table, which is never written out as Parquet), and writes GX Data Docs (made to work offline:
the CDN assets GX's pages load are replaced by copies vendored in ``static/gx/``) plus a
small self-contained summary report under ``<lake>/reports/<run_id>/<layer>/``, and returns
a ``GateResult``. ``check``/``GateResult.raise_for_failure`` raise ``GateFailed`` naming
model, suite and every failed expectation.

See docs/adr/0003-gx-on-duckdb.md for why GX runs on DuckDB through ``govlake.gx_duckdb``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from govlake import config, gx_duckdb
from govlake.storage import Lake, atomic_write_text

log = logging.getLogger(__name__)

LAYERS = ("standardized", "shared")
#: suite parameters the reviewed suites may reference as {"$PARAMETER": name}
SUITE_PARAMETERS = ("today",)
_MAX_EXAMPLES = 5


@dataclass(frozen=True)
class LakeRelation:
    """A candidate that is a table or view of the lake's DuckDB file (gated in place, read-only)."""

    database: Path
    name: str
    where: str | None = None  # a condition on the relation's rows (e.g. the batches a run added)

    def __str__(self) -> str:
        return f"{self.database}::{self.name}" + (f" where {self.where}" if self.where else "")

    def sql(self) -> str:
        return f'select * from main."{self.name}"' + (f" where {self.where}" if self.where else "")


@dataclass(frozen=True)
class Scoped:
    """A candidate Parquet file validated on the rows of some keys only (issue 16): the rows whose
    key (``keys``, the columns of the Parquet file ``touched``) a build recomputed. Every other row
    is, by construction, a row of the version the reviewed suite already passed (the caller
    checks that). Row-level expectations (values, and uniqueness of the key: a duplicate of a
    touched key has that key too) run on those rows; table-level ones (``expect_table_*``: row
    count, columns) and any other on the whole file."""

    path: Path
    touched: Path
    keys: tuple[str, ...]
    why: str = ""

    def __str__(self) -> str:
        return str(self.path)


#: row-level expectation types a key-scoped validation may run on the touched rows only
SCOPABLE = {"expect_column_values_to_not_be_null", "expect_column_values_to_match_regex",
            "expect_column_values_to_not_match_regex", "expect_column_values_to_be_between",
            "expect_column_values_to_be_in_set", "expect_column_values_to_be_unique",
            "expect_compound_columns_to_be_unique", "expect_column_value_lengths_to_be_between"}


def scopable(e: dict, keys: tuple[str, ...]) -> bool:
    """May expectation ``e`` run on the rows of the touched keys only? Row-level checks of values
    yes; uniqueness only of the key itself (the scoped rows hold every row of a touched key)."""
    t = e["type"]
    if t not in SCOPABLE:
        return False
    kw = e.get("kwargs") or {}
    if t == "expect_column_values_to_be_unique":
        return (kw.get("column"),) == tuple(keys)
    if t == "expect_compound_columns_to_be_unique":
        return sorted(kw.get("column_list") or []) == sorted(keys)
    return True


class GateError(RuntimeError):
    """The gate could not run (missing suite, unreadable candidate...): not a data verdict."""


class GateFailed(Exception):
    """A candidate failed its expectations. The message names product/model, suite and each
    failed expectation; ``.result`` holds the whole ``GateResult``."""

    def __init__(self, result: "GateResult", product: str | None = None):
        self.result = result
        self.product = product
        super().__init__(result.failure_message(product))


@dataclass
class FailedExpectation:
    type: str
    column: str | None
    kwargs: dict
    observed_value: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list = field(default_factory=list)
    exception: str | None = None

    def describe(self) -> str:
        col = f"({self.column})" if self.column else ""
        if self.exception:
            return f"{self.type}{col}: could not be evaluated: {self.exception}"
        parts = []
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.4g}%)" if self.unexpected_percent is not None else ""
            parts.append(f"{self.unexpected_count} unexpected{pct}")
        if self.examples:
            parts.append(f"e.g. {self.examples[:_MAX_EXAMPLES]!r}")
        if self.observed_value is not None:
            parts.append(f"observed {self.observed_value!r}")
        expected = {k: v for k, v in self.kwargs.items()
                    if k not in ("column", "column_list", "batch_id", "result_format")}
        if expected:
            parts.append(f"expected {expected}")
        return f"{self.type}{col}: " + "; ".join(parts)


@dataclass
class SuiteResult:
    model: str
    suite: str
    success: bool
    evaluated: int
    failed: list[FailedExpectation]
    table: str  # the candidate file that was validated
    row_count: int | None = None
    docs_page: str | None = None
    suite_sha256: str | None = None  # the reviewed suite (and its overrides) it was run with
    skipped: str | None = None  # set when not run: why an earlier verdict stands (see carried_result)
    scope: str | None = None  # set when row-level expectations ran on the touched keys only (Scoped)


@dataclass
class GateResult:
    layer: str
    run_id: str
    success: bool
    suite_results: dict[str, SuiteResult]
    report_path: Path  # self-contained HTML summary
    docs_path: Path  # GX Data Docs index.html
    json_path: Path  # machine-readable summary
    seconds: float

    def failure_message(self, product: str | None = None) -> str:
        bad = [r for r in self.suite_results.values() if not r.success]
        what = f"product {product}" if product else f"layer {self.layer}"
        lines = [f"gate failed for {what} (run {self.run_id}): "
                 f"{len(bad)} of {len(self.suite_results)} suite(s) failed"]
        for r in bad:
            lines.append(f"- model {r.model}, suite {r.suite}, candidate {r.table}:")
            lines.extend(f"    * {f.describe()}" for f in r.failed)
        lines.append(f"report: {self.report_path}  data docs: {self.docs_path}")
        return "\n".join(lines)

    def raise_for_failure(self, product: str | None = None) -> "GateResult":
        if not self.success:
            raise GateFailed(self, product)
        return self

    def only(self, models: list[str] | tuple[str, ...] | str) -> "GateResult":
        """The same result restricted to some models (e.g. the one product being published)."""
        names = [models] if isinstance(models, str) else list(models)
        sub = {m: self.suite_results[m] for m in names}
        return GateResult(self.layer, self.run_id, all(r.success for r in sub.values()), sub,
                          self.report_path, self.docs_path, self.json_path, self.seconds)

    def summary(self) -> dict:
        """JSON-able summary (goes into the published manifest and validation.json)."""
        return {
            "layer": self.layer,
            "run_id": self.run_id,
            "success": self.success,
            "seconds": round(self.seconds, 3),
            "report_path": str(self.report_path),
            "docs_path": str(self.docs_path),
            "suites": {
                m: {
                    "suite": r.suite,
                    "success": r.success,
                    "evaluated": r.evaluated,
                    "row_count": r.row_count,
                    "table": r.table,
                    "docs_page": r.docs_page,
                    "suite_sha256": r.suite_sha256,
                    "skipped": r.skipped,
                    "scope": getattr(r, "scope", None),
                    "failed": [asdict(f) for f in r.failed],
                }
                for m, r in self.suite_results.items()
            },
        }


def check(result: GateResult, product: str | None = None) -> GateResult:
    return result.raise_for_failure(product)


# ---- suites ---------------------------------------------------------------------------------
def suites_dir(layer: str | None = None) -> Path:
    root = config.expectations_dir()
    return root / layer if layer else root


def suite_path(layer: str, model: str) -> Path:
    if layer not in LAYERS:
        raise GateError(f"unknown layer {layer!r}; expected one of {LAYERS}")
    return suites_dir(layer) / f"{model}.json"


def load_suite_json(layer: str, model: str) -> dict:
    p = suite_path(layer, model)
    if not p.is_file():
        raise GateError(f"no reviewed suite for {layer} model {model!r}: {p} does not exist")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise GateError(f"{p}: invalid JSON at line {e.lineno}: {e.msg}") from e
    if not isinstance(doc.get("expectations"), list) or not doc.get("name"):
        raise GateError(f"{p}: a suite needs 'name' and a list of 'expectations'")
    doc = _merge_overrides(doc, p.parent / "overrides" / p.name)
    for i, e in enumerate(doc["expectations"]):
        if "type" not in e or not isinstance(e.get("kwargs", {}), dict):
            raise GateError(f"{p}: expectation #{i} needs 'type' and a 'kwargs' object")
    return doc


def _merge_overrides(doc: dict, path: Path) -> dict:
    """A generated suite (govlake scaffold) plus its reviewed overrides file, never generated:
    ``{"expectations": [...]}`` appended, ``{"remove": [{"type": ..., "column": ...}]}`` dropped."""
    if not path.is_file():
        return doc
    try:
        ov = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise GateError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    drop = [(r.get("type"), r.get("column")) for r in ov.get("remove") or []]
    kept = [e for e in doc["expectations"]
            if not any(e.get("type") == t and (c is None or e.get("kwargs", {}).get("column") == c) for t, c in drop)]
    extra = ov.get("expectations") or []
    if not isinstance(extra, list):
        raise GateError(f"{path}: 'expectations' must be a list")
    return {**doc, "expectations": kept + extra, "overrides": str(path)}


def suite_sha256(layer: str, model: str) -> str:
    """SHA-256 of the reviewed suite file of ``model`` and of its overrides file, if any: a
    verdict is only reused (``carried_result``) for the same suite."""
    p = suite_path(layer, model)
    if not p.is_file():
        raise GateError(f"no reviewed suite for {layer} model {model!r}: {p} does not exist")
    h = hashlib.sha256(p.read_bytes())
    ov = p.parent / "overrides" / p.name
    if ov.is_file():
        h.update(b"\0overrides\0" + ov.read_bytes())
    return h.hexdigest()


def verdict_holds_later(doc: dict) -> bool:
    """True when a passing verdict of this suite on some bytes still holds on a later day: the
    only date-dependent input, the ``today`` parameter, is used as an upper bound (``max_value``)
    only, which a later day loosens. A suite using a parameter in any other place (e.g. a
    freshness lower bound) must be run again every day."""

    def ok(node, key=None) -> bool:
        if isinstance(node, dict):
            if "$PARAMETER" in node:
                return key == "max_value"
            return all(ok(v, k) for k, v in node.items())
        if isinstance(node, list):
            return all(ok(v, key) for v in node)
        return True

    return all(ok(e.get("kwargs", {})) for e in doc["expectations"])


def list_suites() -> dict[str, list[str]]:
    return {layer: sorted(p.stem for p in suites_dir(layer).glob("*.json")) for layer in LAYERS}


def suite_columns(doc: dict) -> set[str]:
    """Every column a suite names (column, column_A/B, column_list, column_set)."""
    cols: set[str] = set()
    for e in doc["expectations"]:
        kw = e.get("kwargs", {})
        for k in ("column", "column_A", "column_B"):
            if k in kw:
                cols.add(kw[k])
        for k in ("column_list", "column_set"):
            cols.update(kw.get(k) or [])
    return cols


def _build_suite(doc: dict):
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    exps = [ExpectationConfiguration(type=e["type"], kwargs=e.get("kwargs", {}),
                                     meta=e.get("meta") or {}).to_domain_obj()
            for e in doc["expectations"]]
    return gx.ExpectationSuite(name=doc["name"], expectations=exps, meta=doc.get("meta") or {})


# ---- validation -----------------------------------------------------------------------------
def _context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    for name in list(ctx.list_data_docs_sites()):
        ctx.delete_data_docs_site(name)
    ctx.add_data_docs_site(
        site_name="govlake",
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return ctx


def _sql_literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _query_of(candidate, *, scoped: bool) -> str:
    """The SQL a validation reads: a LakeRelation's rows, a Parquet file, or (``scoped``) the
    rows of a Scoped file whose key is one of its touched keys."""
    if isinstance(candidate, LakeRelation):
        return candidate.sql()
    path = candidate.path if isinstance(candidate, Scoped) else candidate
    query = f"select * from read_parquet({_sql_literal(Path(path))})"
    if scoped:
        on = " and ".join(f'c."{k}" is not distinct from t."{k}"' for k in candidate.keys)
        query = (f"select c.* from read_parquet({_sql_literal(Path(path))}) as c "
                 f"semi join read_parquet({_sql_literal(Path(candidate.touched))}) as t on {on}")
    return query


def validate(lake: Lake, layer: str, tables: dict[str, Path | LakeRelation | Scoped], run_id: str, *,
             today: dt.date | None = None, threads: int | None = None,
             memory_limit: str | None = None) -> GateResult:
    """Validate each candidate table of ``layer`` against its reviewed suite.

    ``tables`` maps model name -> Parquet file (or glob), a ``LakeRelation`` (all of one
    DuckDB file, which the validation opens read-only) or a ``Scoped`` Parquet file (its
    row-level expectations on the touched keys' rows, the others on the whole file). Never raises on bad data: the verdict
    is in the result (call ``check``). Raises ``GateError`` if the gate cannot run.
    """
    import great_expectations as gx

    if not tables:
        raise GateError(f"nothing to validate for layer {layer}")
    suites_json = {m: load_suite_json(layer, m) for m in tables}  # fail fast on a missing suite
    databases = {p.database for p in tables.values() if isinstance(p, LakeRelation)}
    if len(databases) > 1:
        raise GateError(f"{layer}: candidates in more than one DuckDB file {sorted(map(str, databases))}")
    database = databases.pop() if databases else None
    for m, p in tables.items():
        if isinstance(p, LakeRelation):
            if not p.database.is_file():
                raise GateError(f"{layer} model {m}: candidate {p}: no DuckDB file {p.database}")
        elif isinstance(p, Scoped):
            if not Path(p.path).is_file() or not Path(p.touched).is_file():
                raise GateError(f"{layer} model {m}: candidate {p.path} or its touched keys {p.touched} do not exist")
        elif not any(Path(p).parent.glob(Path(p).name)):
            raise GateError(f"{layer} model {m}: candidate {p} does not exist")
    gx_duckdb.install()
    started = time.perf_counter()
    out_dir = lake.report_dir(run_id, layer)
    docs_dir = out_dir / "data_docs"
    docs_dir.mkdir(parents=True, exist_ok=True)
    ctx = _context(docs_dir)
    ds = ctx.data_sources.add_sql(
        name=f"candidate_{layer}",
        connection_string=gx_duckdb.connection_string(str(database) if database else ":memory:"),
        kwargs=gx_duckdb.engine_kwargs(threads=threads or min(4, os.cpu_count() or 2),
                                       memory_limit=memory_limit
                                       or os.environ.get("GOVLAKE_DUCKDB_MEMORY_LIMIT", "3GB"),
                                       read_only=database is not None),
    )
    params = {"today": (today or dt.date.today()).isoformat()}
    vdefs = []
    by_suite: dict[str, str] = {}  # GX suite name -> model
    for model, path in tables.items():
        doc = suites_json[model]
        parts = [(model, doc, _query_of(path, scoped=False))]
        if isinstance(path, Scoped):  # row-level part on the touched keys' rows, the rest whole
            rows = [e for e in doc["expectations"] if scopable(e, path.keys)]
            whole = [e for e in doc["expectations"] if not scopable(e, path.keys)]
            parts = [(model, {**doc, "expectations": rows}, _query_of(path, scoped=True))]
            if whole:
                parts.append((f"{model}__whole_table", {**doc, "name": doc["name"] + ".whole_table",
                                                        "expectations": whole}, _query_of(path, scoped=False)))
        for name, d, query in parts:
            asset = ds.add_query_asset(name=name, query=query)
            bdef = asset.add_batch_definition_whole_table(name=f"{name}__candidate")
            suite = ctx.suites.add(_build_suite(d))
            by_suite[d["name"]] = model
            vdefs.append(ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"{layer}__{name}", data=bdef, suite=suite)))
    cp = ctx.checkpoints.add(gx.Checkpoint(
        name=f"gate_{layer}",
        validation_definitions=vdefs,
        actions=[],  # Data Docs built once below, not once per validation (UpdateDataDocsAction)
        result_format={"result_format": "BASIC", "partial_unexpected_count": 20},
    ))
    from great_expectations.core.run_identifier import RunIdentifier

    cp_result = cp.run(expectation_parameters=params,
                       run_id=RunIdentifier(run_name=run_id,
                                            run_time=dt.datetime.now(dt.timezone.utc)))
    # closes the persisted connection (gx_duckdb); a read-only lake file's engine has no pool
    # (engine_kwargs): nothing stays open on it when a writer opens it next
    ds.get_execution_engine().close()
    ctx.build_data_docs(site_names=["govlake"])  # every page of this run's results, one index build

    results: dict[str, SuiteResult] = {}
    for vres in cp_result.run_results.values():
        model = by_suite[vres.suite_name]
        path = tables[model]
        failed, row_count = [], None
        for er in vres.results:
            cfg = er.expectation_config
            res = er.result or {}
            if cfg.type == "expect_table_row_count_to_be_between" and "observed_value" in res:
                row_count = res["observed_value"]
            if er.success:
                continue
            kw = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
            exc = None
            if er.exception_info and er.exception_info.get("raised_exception"):
                exc = er.exception_info.get("exception_message")
            else:
                for v in (er.exception_info or {}).values():
                    if isinstance(v, dict) and v.get("raised_exception"):
                        exc = v.get("exception_message")
                        break
            col = kw.get("column") or (",".join(kw["column_list"]) if "column_list" in kw else None)
            failed.append(FailedExpectation(
                type=cfg.type, column=col, kwargs=_jsonable(kw),
                observed_value=_jsonable(res.get("observed_value")),
                unexpected_count=res.get("unexpected_count"),
                unexpected_percent=res.get("unexpected_percent"),
                examples=_jsonable(res.get("partial_unexpected_list") or [])[:_MAX_EXAMPLES],
                exception=exc,
            ))
        prev = results.get(model)  # a Scoped model has two parts: one result
        results[model] = SuiteResult(
            model=model, suite=suites_json[model]["name"],
            success=bool(vres.success) and not failed and (prev is None or prev.success),
            evaluated=len(vres.results) + (prev.evaluated if prev else 0),
            failed=(prev.failed if prev else []) + failed, table=str(path),
            row_count=row_count if row_count is not None else (prev.row_count if prev else None),
            suite_sha256=suite_sha256(layer, model),
            scope=path.why if isinstance(path, Scoped) else None)

    missing = set(tables) - set(results)
    if missing:
        raise GateError(f"GX returned no result for {sorted(missing)}")
    offline = make_offline(docs_dir)
    for r in results.values():
        pages = sorted((docs_dir / "validations" / Path(*r.suite.split("."))).rglob("*.html"))
        r.docs_page = str(pages[-1]) if pages else None
    gate = GateResult(
        layer=layer, run_id=run_id, success=all(r.success for r in results.values()),
        suite_results={m: results[m] for m in tables},
        report_path=out_dir / "report.html", docs_path=docs_dir / "index.html",
        json_path=out_dir / "validation.json", seconds=time.perf_counter() - started)
    atomic_write_text(gate.json_path, json.dumps(gate.summary(), ensure_ascii=False, indent=2))
    atomic_write_text(gate.report_path, render_report(gate))
    log.info("gate %s run %s: %s in %.1fs (%d offline pages)", layer, run_id,
             "passed" if gate.success else "FAILED", gate.seconds, offline)
    return gate


def carried_result(lake: Lake, layer: str, run_id: str, order: list[str], validated: GateResult | None,
                   carried: dict[str, SuiteResult]) -> GateResult:
    """One gate result for the run: the suites ``validate`` ran (``validated``, may be None when
    every verdict is carried) plus the verdicts carried from an earlier run (``carried``, each
    with ``skipped`` saying why), in ``order``. Writes validation.json and the summary report
    of the run (GX Data Docs only hold the suites that ran)."""

    out_dir = lake.report_dir(run_id, layer)
    out_dir.mkdir(parents=True, exist_ok=True)
    both = {**(validated.suite_results if validated else {}), **carried}
    missing = [m for m in order if m not in both]
    if missing:
        raise GateError(f"{layer} gate of run {run_id}: no verdict for {missing}")
    g = GateResult(
        layer=layer, run_id=run_id, success=all(both[m].success for m in order),
        suite_results={m: both[m] for m in order},
        report_path=out_dir / "report.html", docs_path=out_dir / "data_docs" / "index.html",
        json_path=out_dir / "validation.json", seconds=validated.seconds if validated else 0.0)
    atomic_write_text(g.json_path, json.dumps(g.summary(), ensure_ascii=False, indent=2))
    atomic_write_text(g.report_path, render_report(g))
    return g


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str, ensure_ascii=False))


# ---- offline Data Docs ------------------------------------------------------------------------
#: vendored copies of the assets GX's page templates load from CDNs (npm packages; exact
#: versions, licences and sha256 in static/gx/MANIFEST.json), copied into each site's
#: static/vendor/ so the pages work from file:// with no network
VENDOR_DIR = Path(__file__).parent / "static" / "gx"
_SITE_VENDOR = ("static", "vendor")
#: every remote asset URL that GX 1.x's templates (render/view/templates) write -> vendored file.
#: A GX upgrade that changes one is caught by tests/integration/test_data_docs_browser.py.
GX_ASSETS = {
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js/popper.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/js/bootstrap.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.js",
    # GX asks for the filter-control stylesheet of 1.19.0; 1.19.1's is vendored (same rules)
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/extensions/filter-control/bootstrap-table-filter-control.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/css/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/js/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark/css/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free/css/all.min.css",
    "https://cdn.jsdelivr.net/npm/vega@5": "vega/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed/vega-embed.min.js",
}
#: GX's logos come from S3; those GX also ships are in the site's own static/images
_GX_S3 = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"

_REMOTE = r"""(?:https?:)?//"""
#: <script src=...></script> (with its closing tag), <link href=...>, <img src=...>
_ASSET_TAG = re.compile(
    r"""<(?P<tag>script|link|img)\b[^>]*?(?<![\w-])(?:src|href)\s*=\s*(?P<q>["'])(?P<url>[^"']*)(?P=q)"""
    r"""[^>]*>(?P<close>\s*</script>)?""", re.I)
_SRI = re.compile(r"""\s+(?:integrity|crossorigin)(?:\s*=\s*(["'])[^"']*\1)?""", re.I)
_CSS_URL = re.compile(r"""url\(\s*(["']?)(?P<url>""" + _REMOTE + r"""[^"')]*)\1\s*\)""", re.I)
#: a reference to the site's own static/ files (GX writes one level too few for validation pages)
_SITE_STATIC = re.compile(r"""^(?:\./|(?:\.\./)+)static/(?!vendor/)(?P<path>[^?#]+)(?P<tail>[?#].*)?$""")
#: finds any remaining remote *asset* reference (used by tests and by make_offline's check)
REMOTE_ASSET_RE = re.compile(
    r"""<(?:script|img|iframe|source|video|audio|embed)\b[^>]*\bsrc\s*=\s*["']""" + _REMOTE
    + r"""|<link\b[^>]*\bhref\s*=\s*["']""" + _REMOTE + r"""|url\(\s*["']?""" + _REMOTE, re.I)


def _local(url: str, page_dir: Path, docs_dir: Path) -> str | None:
    """Relative path from ``page_dir`` to the local copy of remote asset ``url``, or None."""
    if url in GX_ASSETS:
        target = docs_dir.joinpath(*_SITE_VENDOR, GX_ASSETS[url])
    elif url.startswith(_GX_S3):
        target = docs_dir / "static" / "images" / url[len(_GX_S3):].split("?")[0]
        if not target.is_file():
            return None
    else:
        return None
    return Path(os.path.relpath(target, page_dir)).as_posix()


def _css_urls(text: str, page_dir: Path, docs_dir: Path, unknown: set[str]) -> str:
    def sub(m: re.Match) -> str:
        local = _local(m["url"], page_dir, docs_dir)
        if local is None:
            unknown.add(m["url"])
            return "none"
        return f"url('{local}')"

    return _CSS_URL.sub(sub, text)


def offline_html(text: str, page: Path, docs_dir: Path, unknown: set[str] | None = None) -> str:
    """Point every CDN/S3 asset of GX page ``page`` at its local copy under ``docs_dir``; drop a
    remote asset that has none (its URL is added to ``unknown``). ``integrity``/``crossorigin``
    are dropped from rewritten tags: a ``file://`` page cannot make the CORS request they imply
    (the vendored bytes are those GX's SRI hashes pin: the browser test checks it). GX's own
    ``static/`` references are recomputed (it writes a wrong depth on validation pages)."""
    unknown = set() if unknown is None else unknown
    page_dir = page.parent

    def tag(m: re.Match) -> str:
        url, whole = m["url"], m.group(0)
        site = _SITE_STATIC.match(url)
        if site:
            fixed = Path(os.path.relpath(docs_dir / "static" / site["path"], page_dir)).as_posix()
            return whole.replace(url, fixed + (site["tail"] or ""), 1)
        if not re.match(_REMOTE, url, re.I):
            return whole
        local = _local(url, page_dir, docs_dir)
        if local is None:
            unknown.add(url)
            return ""
        return _SRI.sub("", whole.replace(url, local, 1))

    return _css_urls(_ASSET_TAG.sub(tag, text), page_dir, docs_dir, unknown)


def make_offline(docs_dir: Path) -> int:
    """Make the generated GX site work from ``file://`` with no network: copy the vendored
    assets into ``<site>/static/vendor/`` and point every page's CDN/S3 reference at them.
    A remote asset with no vendored copy is removed (and logged); raises ``GateError`` if any
    remote asset reference is left. Returns the number of pages and stylesheets rewritten."""
    vendor = docs_dir.joinpath(*_SITE_VENDOR)
    shutil.copytree(VENDOR_DIR, vendor, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MANIFEST.json"))
    n, unknown = 0, set()
    for p in list(docs_dir.rglob("*.html")) + [c for c in docs_dir.rglob("*.css") if vendor not in c.parents]:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".html":
            new = offline_html(text, p, docs_dir, unknown)
        else:
            new = _css_urls(text, p.parent, docs_dir, unknown)
        if new != text:
            p.write_text(new, encoding="utf-8")
        left = REMOTE_ASSET_RE.search(new)
        if left:
            raise GateError(f"{p}: remote asset reference left after offline rewrite: {left.group(0)!r}")
        n += 1
    # GX's dark-mode logo lives only on S3 (the light one is shipped): dropping it is expected
    cdn = sorted(u for u in unknown if not u.startswith(_GX_S3))
    if cdn:
        log.warning("GX Data Docs: no vendored copy of %s: removed (see gate.GX_ASSETS)", cdn)
    return n


# ---- our own summary report (Jinja2, self-contained) -------------------------------------------
_REPORT = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>govlake gate {{ g.layer }} {{ g.run_id }}</title>
<style>
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
.ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}code{background:#f4f4f4}
</style></head><body>
<h1>Gate <code>{{ g.layer }}</code> — run <code>{{ g.run_id }}</code>:
{% if g.success %}<span class="ok">PASSED</span>{% else %}<span class="bad">FAILED</span>{% endif %}</h1>
<p>{{ g.suite_results|length }} suite(s), {{ '%.1f'|format(g.seconds) }} s.
GX Data Docs: <a href="{{ docs_rel }}">{{ docs_rel }}</a></p>
<table><tr><th>model</th><th>suite</th><th>rows</th><th>expectations</th><th>result</th><th>page</th></tr>
{% for m, r in g.suite_results.items() %}
<tr><td>{{ m }}</td><td>{{ r.suite }}</td><td>{{ r.row_count if r.row_count is not none else '' }}</td>
<td>{{ r.evaluated }}</td>
<td>{% if r.success %}<span class="ok">passed</span>{% if r.skipped %} (not run: {{ r.skipped }}){% endif %}{% else %}<span class="bad">{{ r.failed|length }} failed</span>{% endif %}</td>
<td>{% if r.docs_page %}<a href="{{ rel(r.docs_page) }}">details</a>{% endif %}</td></tr>
{% endfor %}</table>
{% for m, r in g.suite_results.items() if not r.success %}
<h2 class="bad">{{ m }} — {{ r.suite }}</h2><p>candidate: <code>{{ r.table }}</code></p><ul>
{% for f in r.failed %}<li><code>{{ f.type }}</code>{% if f.column %} on <code>{{ f.column }}</code>{% endif %}:
{{ f.describe() }}</li>{% endfor %}</ul>
{% endfor %}
</body></html>
"""


def render_report(g: GateResult) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    base = g.report_path.parent

    def rel(p: str | Path) -> str:
        return html.escape(os.path.relpath(p, base))

    return env.from_string(_REPORT).render(g=g, docs_rel=rel(g.docs_path), rel=rel)
