"""The audited, masked query entry point: ``govlake query --role R --purpose P "SQL"``.

How a query runs (docs/adr/0005-access-and-audit.md):

1. The role must exist in the reviewed grants file, be unexpired, and state one of its
   allowed purposes — or the purpose of one of its grants from an approved access request
   (``<lake>/_meta/access.sqlite``, merged in by ``grants.with_approved``). A product reached
   only through such a grant needs an active (unrevoked, unexpired) grant for that product
   and that purpose; a grant limited to some columns exposes only those columns.
2. The SQL is parsed by DuckDB's own parser (``extract_statements``): exactly one statement,
   of type SELECT. Its parse tree (``json_serialize_sql``) is walked: every table it names
   must be a granted, published product (or a CTE of the query); no table function other
   than ``range``/``generate_series``/``unnest`` (so no ``read_csv``, ``read_parquet``,
   ``glob``, ``query``, ``duckdb_*`` … even inside subqueries or CTEs), no qualified schema
   (``information_schema``, ``pg_catalog``, other catalogs), no file path or URL as a table,
   no system function (``current_setting``, ``getvariable``, …).
3. A fresh in-memory DuckDB is opened. For each product the query names, a table is
   created from the product's CURRENT published version with masking applied in the
   ``CREATE TABLE … AS SELECT`` itself (mask / token UDFs running inside DuckDB): the
   connection never holds a clear value of a column above the role's clearance, and no
   view definition holds a file path. The UDFs are then removed (so tokens of guessed IDs
   cannot be computed), Python replacement scans, extension autoload and spilling are off,
   ``enable_external_access=false`` and ``lock_configuration=true`` are set.
4. The user's SQL runs with a timeout; at most ``limit`` rows are returned.
5. Every query, allowed or refused, is appended to the audit log before a result is
   returned; if the audit write fails, no result is returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from govlake import access_requests, audit, grants, masking, products
from govlake.storage import Lake

DEFAULT_LIMIT = 1000
MAX_LIMIT = 1_000_000
DEFAULT_TIMEOUT = 60.0

ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
DENIED_FUNCTIONS = frozenset({
    "current_setting", "getvariable", "getenv", "json_serialize_sql", "json_deserialize_sql",
    "json_execute_serialized_sql", "current_catalog", "current_schemas", "set_variable",
})
DENIED_FUNCTION_PREFIXES = ("read_", "duckdb_", "pragma_", "parquet_", "glob", "sniff_", "query",
                            "sql_", "govlake_", "which_secret", "iceberg_", "delta_", "icu_",
                            "load_", "install_", "checkpoint", "force_checkpoint")


class QueryRefused(Exception):
    """The query was refused before it ran; ``what`` was refused and ``why``."""

    def __init__(self, what: str, why: str):
        self.what, self.why = what, why
        super().__init__(f"refused: {what} — {why}")


class QueryFailed(Exception):
    """An allowed query failed while running (SQL error, timeout)."""


@dataclass
class Analysis:
    tables: set[str] = field(default_factory=set)  # names referenced (lower-case), CTEs removed
    ctes: set[str] = field(default_factory=set)
    columns: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)


@dataclass
class QueryResult:
    table: pa.Table
    columns: list[str]
    row_count: int
    truncated: bool
    products: dict[str, int]  # product -> version read
    treatments: dict[str, dict[str, str]]  # product -> column -> treatment (clear columns omitted)
    audit_seq: int
    duration_ms: int
    grants: dict[str, str] = field(default_factory=dict)  # product -> approved grant id used


# ---- parsing ------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    return any(ch in name for ch in "/\\.:~") or name.startswith("$")


def _walk(node, a: Analysis) -> None:
    if isinstance(node, list):
        for x in node:
            _walk(x, a)
        return
    if not isinstance(node, dict):
        return
    typ, cls = node.get("type"), node.get("class")
    if typ == "TABLE_FUNCTION":
        fn = ((node.get("function") or {}).get("function_name") or "?").lower()
        if fn not in ALLOWED_TABLE_FUNCTIONS:
            raise QueryRefused(
                f"table function {fn}()",
                "file, URL and system table functions (read_csv, read_parquet, read_json, glob, "
                "query, duckdb_*, …) are not allowed; query the granted products by name")
    elif typ == "BASE_TABLE":
        name = str(node.get("table_name") or "")
        schema, catalog = str(node.get("schema_name") or ""), str(node.get("catalog_name") or "")
        shown = ".".join(x for x in (catalog, schema, name) if x)
        if _looks_like_path(name):
            raise QueryRefused(f"table {name!r}",
                               "files and URLs cannot be read as tables; query the granted products by name")
        if schema.lower() not in ("", "main") or catalog.lower() not in ("", "memory"):
            raise QueryRefused(f"table {shown}",
                               "only the granted products (unqualified names) can be queried; system "
                               "schemas and other catalogs are not available")
        if node.get("at_clause"):
            raise QueryRefused(f"table {name} AT (…)", "time travel is not supported")
        a.tables.add(name.lower())
    elif typ == "SHOW_REF":
        if node.get("show_type") not in ("DESCRIBE", "SUMMARY") or (
                node.get("table_name") and not node.get("query")):
            raise QueryRefused(f"SHOW {node.get('table_name') or ''}".strip(),
                               "SHOW statements are not allowed; DESCRIBE/SUMMARIZE a granted product")
    if cls == "FUNCTION":
        fn = str(node.get("function_name") or "").lower()
        a.functions.add(fn)
        if fn in DENIED_FUNCTIONS or fn.startswith(DENIED_FUNCTION_PREFIXES):
            raise QueryRefused(f"function {fn}()", "system and file functions are not allowed")
    elif cls == "COLUMN_REF":
        names = node.get("column_names") or []
        if names:
            a.columns.add(str(names[-1]))
    cte = node.get("cte_map")
    if isinstance(cte, dict):
        for item in cte.get("map") or []:
            a.ctes.add(str(item.get("key", "")).lower())
    for v in node.values():
        if isinstance(v, (dict, list)):
            _walk(v, a)


def analyze(sql: str) -> Analysis:
    """Check that ``sql`` is exactly one read-only SELECT; return what it references.

    Raises QueryRefused with what and why."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("empty query", "give one SELECT statement")
    con = duckdb.connect(":memory:")
    try:
        try:
            stmts = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryRefused("unparseable SQL", str(exc).splitlines()[0]) from exc
        if len(stmts) == 0:
            raise QueryRefused("empty query", "give one SELECT statement")
        if len(stmts) > 1:
            kinds = ", ".join(s.type.name for s in stmts)
            raise QueryRefused(f"{len(stmts)} statements ({kinds})",
                               "only a single SELECT statement may run")
        st = stmts[0]
        if st.type != duckdb.StatementType.SELECT:
            raise QueryRefused(f"{st.type.name} statement",
                               "only a single read-only SELECT may run (no ATTACH, COPY, EXPORT, "
                               "INSTALL/LOAD, SET/PRAGMA, CALL, DDL or writes)")
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    finally:
        con.close()
    if tree.get("error"):
        raise QueryRefused("query", f"cannot be analysed: {tree.get('error_message')}")
    if len(tree.get("statements") or []) != 1:
        raise QueryRefused("query", "only a single SELECT statement may run")
    a = Analysis()
    try:
        _walk(tree["statements"][0], a)
    except RecursionError as exc:
        raise QueryRefused("query", "too deeply nested to be checked") from exc
    a.tables -= a.ctes
    return a


# ---- running ------------------------------------------------------------------------------
def _product_files(lake: Lake, product: str, version: int) -> list[Path]:
    vdir = lake.version_dir(product, version)
    files = sorted(p for p in vdir.rglob("*.parquet") if p.is_file())
    if not files:
        raise QueryRefused(f"product {product}", f"published version v={version} has no Parquet data")
    return files


def _lock_down(con) -> None:
    for stmt in (
        "SET python_enable_replacements = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET temp_directory = ''",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)
    allowed = con.execute("SELECT value FROM duckdb_settings() WHERE name IN "
                          "('allowed_directories', 'allowed_paths')").fetchall()
    if any(v[0] not in ("[]", "", None) for v in allowed):  # pragma: no cover - defensive
        raise RuntimeError(f"DuckDB still allows some paths after lock-down: {allowed}")


def _audit_payload(role, purpose, sql, **extra) -> dict:
    return {
        "role": role,
        "purpose": purpose,
        "actor": audit.actor(),
        "sql": sql,
        "sql_sha256": hashlib.sha256(str(sql).encode("utf-8")).hexdigest(),
        **extra,
    }


def run_query(role: str, purpose: str, sql: str, *, lake: Lake | None = None,
              limit: int | None = DEFAULT_LIMIT, grants_path: Path | None = None,
              dbt_dir: Path | None = None, today: dt.date | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> QueryResult:
    """Run one read-only SELECT for ``role`` stating ``purpose``; audited either way.

    Raises QueryRefused (not run; recorded as ``query_refused``) or QueryFailed (ran and
    failed; recorded as ``query`` with status error)."""
    lake = lake or Lake.default()
    t0 = time.monotonic()
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    base = {"limit": limit}
    try:
        if limit < 1 or limit > MAX_LIMIT:
            raise QueryRefused(f"limit {limit}", f"the row limit must be between 1 and {MAX_LIMIT}")
        try:
            roles = grants.load(grants_path)
        except grants.GrantError as exc:
            raise QueryRefused("grants", f"the grants file is invalid: {exc}") from exc
        try:
            roles = grants.with_approved(roles, access_requests.approved_grants(lake))
        except access_requests.AccessRequestError as exc:
            raise QueryRefused("approved grants", str(exc)) from exc
        r = roles.get(role)
        if r is None:
            raise QueryRefused(f"role {role!r}", "no such role in the grants file")
        base["approval"] = r.approval
        if r.expired(today):
            raise QueryRefused(f"role {role!r}", f"the grant expired on {r.expires.isoformat()}")
        if purpose not in r.purposes and not r.approved_purpose(purpose):
            raise QueryRefused(f"purpose {purpose!r}",
                               f"role {role} may only query for: {', '.join(r.purposes)}")
        a = analyze(sql)
        base["referenced_columns"] = sorted(a.columns)
        try:
            meta = products.load(dbt_dir)
        except products.ProductMetadataError as exc:
            raise QueryRefused("product metadata", f"invalid, so no column can be graded: {exc}") from exc
        published = set(lake.products())
        wanted: dict[str, int] = {}
        approved: dict[str, grants.ApprovedGrant] = {}
        for name in sorted(a.tables):
            if name not in published and name not in meta:
                raise QueryRefused(f"table {name}", "no such product")
            if not (name in r.products and purpose in r.purposes):
                g, why = r.approved_grant(name, purpose, today)
                if g is None:
                    if why is None and name in r.products:
                        why = f"granted to role {role} only for: {', '.join(r.purposes)}"
                    raise QueryRefused(f"product {name}", why or f"not granted to role {role}")
                approved[name] = g
            version = lake.current_version(name)
            if version is None:
                raise QueryRefused(f"product {name}", "has no published version")
            pm = meta.get(name)
            if pm and pm.sharing_type == "不予共享" and r.department != pm.owner_department:
                raise QueryRefused(f"product {name}",
                                   f"不予共享 ({pm.legal_basis}): only {pm.owner_department} may read it")
            wanted[name] = version
        base["products"] = wanted
        if approved:
            base["access_grants"] = {n: g.grant_id for n, g in approved.items()}
        return _execute(lake, r, purpose, sql, a, meta, wanted, limit, timeout, t0, base, approved)
    except QueryRefused as exc:
        audit.append(lake, "query_refused", _audit_payload(
            role, purpose, sql, refused=exc.what, reason=exc.why,
            duration_ms=int((time.monotonic() - t0) * 1000), **base))
        raise


def _execute(lake, r, purpose, sql, a, meta, wanted, limit, timeout, t0, base,
             approved: dict | None = None) -> QueryResult:
    treatments: dict[str, dict[str, str]] = {}
    con = duckdb.connect(":memory:")
    try:
        plans = {}
        excluded: dict[str, list[str]] = {}
        visible: set[str] = set()
        need_token = False
        for name, version in wanted.items():
            files = _product_files(lake, name, version)
            src = "read_parquet([" + ", ".join(masking.sql_literal(str(f)) for f in files) + \
                  "], union_by_name = true, hive_partitioning = false)"
            cols = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            g = (approved or {}).get(name)
            if g is not None and g.columns is not None:  # a grant for some columns only
                excluded[name] = [c for c in cols if c not in g.columns]
                cols = [c for c in cols if c in g.columns]
            visible |= set(cols)
            plan = r.plan(meta.get(name), name, cols)
            plans[name] = (src, plan)
            need_token |= any(c.treatment == "token" for c in plan)
            treatments[name] = {c.column: c.treatment for c in plan if c.treatment != "clear"}
        for name, cols in excluded.items():
            hidden = sorted(set(a.columns) & set(cols) - visible)
            if hidden:
                g = approved[name]
                raise QueryRefused(f"column {', '.join(hidden)} of {name}",
                                   f"grant {g.grant_id} covers only: {', '.join(g.columns)}")
        if excluded:
            base["grant_columns"] = {n: list(approved[n].columns) for n in excluded}
        key = None
        if need_token:
            try:
                key = masking.load_key()
            except masking.TokenKeyError as exc:
                raise QueryRefused("join tokens", str(exc)) from exc
            base["token_key_id"] = masking.key_id(key)
            base["token_algorithm"] = masking.token_algorithm()
        udfs = masking.register_udfs(con, key)
        for name, (src, plan) in plans.items():
            owner = meta[name].owner_department if name in meta else ""
            internal = bool(r.department) and r.department == owner
            exprs = ", ".join(masking.column_sql(c.column, c.element, c.treatment, internal) for c in plan)
            con.execute(f"CREATE TABLE {masking.sql_ident(name)} AS SELECT {exprs} FROM {src}")
        for u in udfs:
            con.remove_function(u)
        _lock_down(con)
    except QueryRefused:
        con.close()
        raise
    except Exception:
        con.close()
        raise

    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        try:
            rel = con.sql(sql)
            if rel is None:  # pragma: no cover - analyze() only lets SELECTs through
                raise QueryRefused("statement", "returned no result")
            reader = rel.to_arrow_reader(min(limit + 1, 10_000))
            batches, n = [], 0
            for batch in reader:
                batches.append(batch)
                n += batch.num_rows
                if n > limit:
                    break
            schema = reader.schema
            table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
        except duckdb.PermissionException as exc:
            raise QueryRefused("query", f"blocked by the locked-down engine: {str(exc).splitlines()[0]}") from exc
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.InterruptException):
                msg = f"query timed out after {timeout:g} s"
            else:
                msg = str(exc).strip() or type(exc).__name__
            audit.append(lake, "query", _audit_payload(
                r.name, purpose, sql, status="error", error=msg.splitlines()[0],
                masked_columns=treatments, duration_ms=int((time.monotonic() - t0) * 1000), **base))
            raise QueryFailed(msg) from exc
    finally:
        timer.cancel()
        con.close()
    truncated = table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    duration = int((time.monotonic() - t0) * 1000)
    entry = audit.append(lake, "query", _audit_payload(
        r.name, purpose, sql, status="ok", result_columns=table.column_names,
        masked_columns=treatments, row_count=table.num_rows, truncated=truncated,
        duration_ms=duration, **base))
    return QueryResult(table=table, columns=table.column_names, row_count=table.num_rows,
                       truncated=truncated, products=dict(wanted), treatments=treatments,
                       audit_seq=entry["seq"], duration_ms=duration,
                       grants=dict(base.get("access_grants") or {}))
