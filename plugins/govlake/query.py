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
import math
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
    suppressed_groups: int | None = None  # aggregate-only roles: groups under k removed


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


# ---- aggregate-only roles (statistics without individuals) ------------------------------------
GROUP_N = "__govlake_group_n"
_aggregates: frozenset[str] | None = None


def _aggregate_functions() -> frozenset[str]:
    global _aggregates
    if _aggregates is None:
        con = duckdb.connect(":memory:")
        try:
            _aggregates = frozenset(r[0].lower() for r in con.execute(
                "select distinct function_name from duckdb_functions() where function_type = 'aggregate'"
            ).fetchall()) | {"count_star"}
        finally:
            con.close()
    return _aggregates


def _expr_kinds(node, found: set[str]) -> None:
    """Collect 'aggregate' / 'window' for an expression, not descending into subqueries."""
    if isinstance(node, list):
        for x in node:
            _expr_kinds(x, found)
        return
    if not isinstance(node, dict):
        return
    cls = node.get("class")
    if cls == "SUBQUERY":
        return
    if cls == "WINDOW":
        found.add("window")
    if cls == "FUNCTION" and str(node.get("function_name", "")).lower() in _aggregate_functions():
        found.add("aggregate")
        fn = str(node.get("function_name")).lower()
        if node.get("filter"):
            raise QueryRefused(f"{fn}(…) FILTER (…)", "an aggregate-only role aggregates whole groups; a "
                               "filtered aggregate could single out a few persons inside a large group")
        for arg in node.get("arguments") or []:
            if not _plain(arg):
                raise QueryRefused(f"{fn}(…) over an expression", "an aggregate-only role aggregates columns "
                                   "(count, sum, avg … of a column), not CASE or computed expressions, which "
                                   "could single out a few persons inside a large group")
        return
    for v in node.values():
        if isinstance(v, (dict, list)):
            _expr_kinds(v, found)


def _plain(node) -> bool:
    """A column, a constant, ``*``, or a cast of one of them."""
    if not isinstance(node, dict):
        return False
    if "expression" in node and "class" not in node:  # a (named) function argument
        return _plain(node["expression"])
    cls = node.get("class")
    if cls in ("COLUMN_REF", "CONSTANT", "STAR"):
        return True
    if cls == "CAST":
        return _plain(node.get("child"))
    return False


def aggregate_sql(sql: str) -> str:
    """For an aggregate-only role: check that ``sql`` aggregates at its top level (GROUP BY or
    aggregate functions only; no window functions, no set operations, no DISTINCT rows), and
    return it with the group size appended as a last column (``__govlake_group_n``, a
    ``count(*)``), so groups smaller than the role's k can be suppressed."""
    if GROUP_N in sql.lower():
        raise QueryRefused(f"name {GROUP_N}", "is reserved by the service")
    con = duckdb.connect(":memory:")
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
        node = tree["statements"][0]["node"]
        if node.get("type") != "SELECT_NODE":
            raise QueryRefused("query shape", "an aggregate-only role runs one aggregating SELECT "
                               f"(not {str(node.get('type', '?')).replace('_NODE', '')})")
        found: set[str] = set()
        for e in node.get("select_list") or []:
            _expr_kinds(e, found)
        grouped = bool(node.get("group_expressions")) or bool(node.get("group_sets")) or \
            node.get("aggregate_handling") == "FORCE_AGGREGATES"
        if "window" in found:
            raise QueryRefused("window function", "an aggregate-only role's results must be groups, not rows")
        if not grouped and "aggregate" not in found:
            raise QueryRefused("row-level query", "this role is aggregate-only: use GROUP BY and aggregate "
                               "functions (count, sum, avg, …); groups of fewer than k persons are suppressed")
        if any(m.get("type") == "DISTINCT_MODIFIER" for m in node.get("modifiers") or []):
            raise QueryRefused("SELECT DISTINCT", "an aggregate-only role's results must be counted groups")
        n = json.loads(con.execute("SELECT json_serialize_sql(?)", [f"select count(*) AS {GROUP_N}"]
                                   ).fetchall()[0][0])["statements"][0]["node"]["select_list"][0]
        node["select_list"].append(n)
        return con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchall()[0][0]
    finally:
        con.close()


def suppress(table: pa.Table, k: int) -> tuple[pa.Table, int]:
    """(the groups of at least ``k`` rows without the group-size column, how many were removed)."""
    import pyarrow.compute as pc

    n = table.column(GROUP_N)
    keep = pc.greater_equal(n, k)
    kept = table.filter(keep).drop_columns([GROUP_N])
    return kept, table.num_rows - kept.num_rows


# ---- authorization -------------------------------------------------------------------------
@dataclass
class Authorization:
    """What a role may read for one request: the products named, each at the version resolved
    once for the whole request, with the approved grants used."""

    role: grants.Role
    purpose: str
    wanted: dict[str, int]  # product -> version (resolved once)
    approved: dict[str, grants.ApprovedGrant]
    meta: dict  # product name -> products.Product
    base: dict  # audit fields


def load_roles(lake: Lake, grants_path: Path | None = None) -> dict[str, grants.Role]:
    try:
        roles = grants.load(grants_path)
    except grants.GrantError as exc:
        raise QueryRefused("grants", f"the grants file is invalid: {exc}") from exc
    try:
        return grants.with_approved(roles, access_requests.approved_grants(lake))
    except access_requests.AccessRequestError as exc:
        raise QueryRefused("approved grants", str(exc)) from exc


def check_role(roles: dict[str, grants.Role], role: str, purpose: str, base: dict,
               today: dt.date | None = None) -> grants.Role:
    r = roles.get(role)
    if r is None:
        raise QueryRefused(f"role {role!r}", "no such role in the grants file")
    base["approval"] = r.approval
    if r.expired(today):
        raise QueryRefused(f"role {role!r}", f"the grant expired on {r.expires.isoformat()}")
    if purpose not in r.purposes and not r.approved_purpose(purpose):
        raise QueryRefused(f"purpose {purpose!r}",
                           f"role {role} may only query for: {', '.join(r.purposes)}")
    return r


def authorize(lake: Lake, role: str, purpose: str, tables, *, base: dict, today: dt.date | None = None,
              grants_path: Path | None = None, dbt_dir: Path | None = None,
              roles: dict | None = None, meta: dict | None = None) -> Authorization:
    """Check that ``role`` may read every product in ``tables`` for ``purpose``; resolve each
    product's current version once. Raises QueryRefused naming what and why."""
    roles = roles if roles is not None else load_roles(lake, grants_path)
    r = check_role(roles, role, purpose, base, today)
    if meta is None:
        try:
            meta = products.load(dbt_dir)
        except products.ProductMetadataError as exc:
            raise QueryRefused("product metadata", f"invalid, so no column can be graded: {exc}") from exc
    published = set(lake.products())
    wanted: dict[str, int] = {}
    approved: dict[str, grants.ApprovedGrant] = {}
    for name in sorted(tables):
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
    return Authorization(r, purpose, wanted, approved, meta, base)


# ---- the engine: views over renditions ------------------------------------------------------
def product_file(lake: Lake, product: str, version: int) -> Path:
    """The data file of a published version (renditions live in a subfolder and are not it)."""
    vdir = lake.version_dir(product, version)
    files = sorted(p for p in vdir.glob("*.parquet") if p.is_file())
    if len(files) != 1:
        raise QueryRefused(f"product {product}",
                           f"published version v={version} has {len(files)} data files, expected 1")
    return files[0]


def column_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    from govlake.sharing import crypto

    return list(pq.read_schema(path, **crypto.arrow_read_options(path)).names)


@dataclass
class Prepared:
    """A locked-down DuckDB connection whose only tables are views over the rendition files
    the role may read (one file per product, at the version resolved for the request)."""

    con: object
    treatments: dict[str, dict[str, str]]
    files: dict[str, str]  # product -> file read (base file when every column is clear)
    renditions: dict[str, str]  # product -> rendition id ("" when clear)


def internal_reader(role: grants.Role, pm) -> bool:
    return bool(role.department) and pm is not None and role.department == pm.owner_department


def plan_for(auth: Authorization, name: str, cols: list[str], referenced: set[str] | None = None,
             ) -> tuple[list[grants.ColumnPlan], list[str]]:
    """(the role's plan for the visible columns of a product, the columns its grant hides)."""
    g = auth.approved.get(name)
    hidden: list[str] = []
    if g is not None and g.columns is not None:  # a grant for some columns only
        hidden = [c for c in cols if c not in g.columns]
        cols = [c for c in cols if c in g.columns]
    return auth.role.plan(auth.meta.get(name), name, cols), hidden


def prepare(lake: Lake, auth: Authorization, analysis: Analysis, *, memory_limit: str = "512MB",
            threads: int = 2) -> Prepared:
    """Open the engine for one request. Masking happened at publish time: each product is read
    from the rendition matching the role's plan (built now if a grant is newer than the
    version), with projection and filter pushdown — nothing is copied or masked per query."""
    from govlake.sharing import crypto, renditions

    con = duckdb.connect(":memory:", config={"memory_limit": memory_limit, "threads": int(threads)})
    try:
        con.execute("SET temp_directory = ''")
        treatments: dict[str, dict[str, str]] = {}
        files: dict[str, str] = {}
        rids: dict[str, str] = {}
        visible: set[str] = set()
        excluded: dict[str, list[str]] = {}
        key = None
        for name, version in auth.wanted.items():
            base_file = product_file(lake, name, version)
            cols = column_names(base_file)
            plan, hidden = plan_for(auth, name, cols)
            if hidden:
                excluded[name] = hidden
            visible |= {c.column for c in plan}
            treatments[name] = {c.column: c.treatment for c in plan if c.treatment != "clear"}
            if treatments[name]:
                internal = internal_reader(auth.role, auth.meta.get(name))
                if key is None and any(c.treatment == "token" for c in plan):
                    try:
                        key = masking.load_key()
                    except masking.TokenKeyError as exc:
                        raise QueryRefused("join tokens", str(exc)) from exc
                    auth.base["token_key_id"] = masking.key_id(key)
                    auth.base["token_algorithm"] = "sha256"
                path = renditions.ensure(lake, name, version, plan, internal, key)
                rids[name] = path.stem
            else:
                path = base_file
                rids[name] = ""
            files[name] = str(path)
            if crypto.is_encrypted(path):
                # an encrypted file (ADR 0014) is read through pyarrow, registered under the
                # product's name with the plan's columns only: no other name or column exists,
                # and the scan needs no file access (allowed_paths lists only plain files)
                crypto.register(con, name, path, [c.column for c in plan])
            else:
                select = ", ".join(masking.sql_ident(c.column) for c in plan)
                con.execute(f"CREATE VIEW {masking.sql_ident(name)} AS SELECT {select} FROM "
                            f"{crypto.read_parquet_sql(path, con)}")
        for name, cols in excluded.items():
            hidden = sorted(set(analysis.columns) & set(cols) - visible)
            if hidden:
                g = auth.approved[name]
                raise QueryRefused(f"column {', '.join(hidden)} of {name}",
                                   f"grant {g.grant_id} covers only: {', '.join(g.columns)}")
        if excluded:
            auth.base["grant_columns"] = {n: list(auth.approved[n].columns) for n in excluded}
        plain = [f for f in files.values() if not crypto.is_encrypted(f)]
        con.execute("SET allowed_paths = [" + ", ".join(masking.sql_literal(f) for f in plain) + "]")
        _lock_down(con)
    except BaseException:
        con.close()
        raise
    return Prepared(con, treatments, files, rids)


def check_timeout(value, maximum: float) -> float:
    """A caller may ask for a shorter time limit, never a longer one; inf, nan, ≤ 0 refused."""
    try:
        t = float(value)
    except (TypeError, ValueError) as exc:
        raise QueryRefused(f"timeout {value!r}", "must be a number of seconds") from exc
    if not math.isfinite(t) or t <= 0:
        raise QueryRefused(f"timeout {value!r}", f"must be a finite number of seconds in (0, {maximum:g}]")
    if t > maximum:
        raise QueryRefused(f"timeout {value!r}", f"the server's limit is {maximum:g} s; ask for that or less")
    return t


def _lock_down(con) -> None:
    for stmt in (
        "SET python_enable_replacements = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)


def _audit_payload(role, purpose, sql, actor: dict | None = None, **extra) -> dict:
    return {
        "role": role,
        "purpose": purpose,
        "actor": actor if actor is not None else audit.actor(),
        "sql": sql,
        "sql_sha256": hashlib.sha256(str(sql).encode("utf-8")).hexdigest(),
        **extra,
    }


def run_query(role: str, purpose: str, sql: str, *, lake: Lake | None = None,
              limit: int | None = DEFAULT_LIMIT, grants_path: Path | None = None,
              dbt_dir: Path | None = None, today: dt.date | None = None,
              timeout: float = DEFAULT_TIMEOUT, max_timeout: float = DEFAULT_TIMEOUT,
              actor: dict | None = None, memory_limit: str = "512MB") -> QueryResult:
    """Run one read-only SELECT for ``role`` stating ``purpose``; audited either way. This is
    the engine behind the sharing service; it runs in the service's process only.

    Raises QueryRefused (not run; recorded as ``query_refused``) or QueryFailed (ran and
    failed; recorded as ``query`` with status error)."""
    lake = lake or Lake.default()
    t0 = time.monotonic()
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    base: dict = {"limit": limit}
    try:
        if limit < 1 or limit > MAX_LIMIT:
            raise QueryRefused(f"limit {limit}", f"the row limit must be between 1 and {MAX_LIMIT}")
        timeout = check_timeout(timeout, max_timeout)
        roles = load_roles(lake, grants_path)
        r = check_role(roles, role, purpose, base, today)
        a = analyze(sql)
        base["referenced_columns"] = sorted(a.columns)
        run_sql = sql
        if r.aggregate_only:
            run_sql = aggregate_sql(sql)
            base["aggregate_only"] = {"min_group_size": r.min_group_size}
        auth = authorize(lake, role, purpose, a.tables, base=base, today=today, dbt_dir=dbt_dir, roles=roles)
        prep = prepare(lake, auth, a, memory_limit=memory_limit)
    except QueryRefused as exc:
        audit.append(lake, "query_refused", _audit_payload(
            role, purpose, sql, actor, refused=exc.what, reason=exc.why,
            duration_ms=int((time.monotonic() - t0) * 1000), **base))
        raise
    con, treatments = prep.con, prep.treatments
    timer = threading.Timer(timeout, con.interrupt)
    timer.start()
    try:
        try:
            rel = con.sql(run_sql)
            if rel is None:  # pragma: no cover - analyze() only lets SELECTs through
                raise QueryRefused("statement", "returned no result")
            reader = rel.to_arrow_reader(min(limit + 1, 10_000) if not r.aggregate_only else 100_000)
            batches, n = [], 0
            for batch in reader:
                batches.append(batch)
                n += batch.num_rows
                if n > limit and not r.aggregate_only:
                    break
            schema = reader.schema
            table = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
            if r.aggregate_only:
                table, base["suppressed_groups"] = suppress(table, r.min_group_size)
        except duckdb.PermissionException as exc:
            raise QueryRefused("query", f"blocked by the locked-down engine: {str(exc).splitlines()[0]}") from exc
        except duckdb.Error as exc:
            msg = (f"query timed out after {timeout:g} s" if isinstance(exc, duckdb.InterruptException)
                   else (str(exc).strip() or type(exc).__name__))
            audit.append(lake, "query", _audit_payload(
                role, purpose, sql, actor, status="error", error=msg.splitlines()[0],
                masked_columns=treatments, duration_ms=int((time.monotonic() - t0) * 1000), **base))
            raise QueryFailed(msg) from exc
    except QueryRefused as exc:
        audit.append(lake, "query_refused", _audit_payload(
            role, purpose, sql, actor, refused=exc.what, reason=exc.why,
            duration_ms=int((time.monotonic() - t0) * 1000), **base))
        raise
    finally:
        timer.cancel()
        con.close()
    truncated = table.num_rows > limit
    if truncated:
        table = table.slice(0, limit)
    duration = int((time.monotonic() - t0) * 1000)
    entry = audit.append(lake, "query", _audit_payload(
        role, purpose, sql, actor, status="ok", result_columns=table.column_names,
        masked_columns=treatments, row_count=table.num_rows, truncated=truncated,
        duration_ms=duration, **base))
    return QueryResult(table=table, columns=table.column_names, row_count=table.num_rows,
                       truncated=truncated, products=dict(auth.wanted), treatments=treatments,
                       audit_seq=entry["seq"], duration_ms=duration,
                       grants=dict(base.get("access_grants") or {}),
                       suppressed_groups=base.get("suppressed_groups"))
