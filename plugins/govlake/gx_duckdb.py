"""Compatibility shim: run real Great Expectations (1.24) validations pushed down to DuckDB.

GX's SQL path works with any SQLAlchemy dialect in principle, but with DuckDB
(duckdb-engine) two things break (see docs/adr/0003-gx-on-duckdb.md):

1. ``SqlAlchemyExecutionEngine.execute_query`` executes inside ``with engine.connect()`` and
   returns the cursor result *after* the connection is closed. Closing a duckdb-engine
   connection rolls back its implicit transaction, which discards DuckDB's pending result:
   ``fetchall()`` returns ``[]`` and ``resolve_metric_bundle`` fails with
   ``MetricResolutionError: list index out of range`` (GX issue #11579). GX already keeps one
   persisted connection for SQLite / SQL Server / BigQuery / Databricks; this shim makes
   DuckDB engines do the same (one connection per execution engine, closed in ``close()``).
2. ``get_dialect_regex_expression`` has no DuckDB branch (duckdb-engine's dialect subclasses
   ``PGDialect_psycopg2``, but GX receives a dialect *instance* and, under SQLAlchemy 2.1,
   ``sqlalchemy.dialects.postgresql.dialect`` is psycopg 3 anyway), so every regex expectation
   raises ``Regex is not supported for dialect duckdb``. The shim returns DuckDB's
   ``regexp_matches(column, pattern)`` - a *search* (like Python's ``re.search``, which is what
   GX's pandas engine uses), not a full match - and delegates to GX for every other dialect.

Both patches are narrow (they only change behaviour when the engine's dialect is ``duckdb``),
idempotent, and checked by ``tests/integration/test_gx_duckdb.py`` so a GX upgrade that moves
the patched functions fails a test instead of silently validating nothing.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import threading
from contextlib import contextmanager
from typing import Any

# GX must never phone home (also set by config.airflow_env for Airflow workers).
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

log = logging.getLogger(__name__)

#: GX versions this shim was written against and is tested with. Anything else: refuse,
#: rather than validate with patches that may no longer apply.
SUPPORTED_GX = ("1.24.",)
DIALECT = "duckdb"

_lock = threading.Lock()
_installed = False
_patched_modules: list[str] = []


class ShimError(RuntimeError):
    """The installed Great Expectations is not one this shim has been tested with."""


def _is_duckdb(dialect: Any) -> bool:
    d = getattr(dialect, "dialect", dialect)  # engine, dialect class or dialect instance
    return getattr(d, "name", None) == DIALECT


def duckdb_regex_expression(column, regex: str, positive: bool = True):
    import sqlalchemy as sa

    expr = sa.func.regexp_matches(column, sa.literal(regex, literal_execute=True))
    return expr if positive else sa.not_(expr)


def install() -> list[str]:
    """Apply the two patches (idempotent). Returns the GX modules whose regex helper was patched."""
    global _installed
    with _lock:
        if _installed:
            return list(_patched_modules)
        import great_expectations as gx
        from great_expectations.execution_engine import sqlalchemy_execution_engine as see
        from great_expectations.expectations.metrics import util as metrics_util

        if not gx.__version__.startswith(SUPPORTED_GX):
            raise ShimError(
                f"govlake.gx_duckdb is tested with great-expectations {SUPPORTED_GX}, found "
                f"{gx.__version__}: re-run tests/integration/test_gx_duckdb.py and update the shim"
            )
        engine_cls = see.SqlAlchemyExecutionEngine
        for name in ("get_connection", "execute_query", "close"):
            if not hasattr(engine_cls, name):
                raise ShimError(f"SqlAlchemyExecutionEngine.{name} is gone: the shim needs updating")

        # ---- 1. a persisted connection for DuckDB engines ---------------------------------
        orig_get_connection = engine_cls.get_connection
        orig_close = engine_cls.close

        @contextmanager
        def get_connection(self):
            if not _is_duckdb(self.engine):
                with orig_get_connection(self) as conn:
                    yield conn
                return
            if self._connection is None or self._connection.closed:
                self._connection = self.engine.connect()
            yield self._connection  # kept open: results are read after this block

        def close(self) -> None:
            if _is_duckdb(self.engine) and self._connection is not None:
                try:
                    self._connection.close()
                finally:
                    self._connection = None
            orig_close(self)

        get_connection.__wrapped__ = orig_get_connection  # type: ignore[attr-defined]
        close.__wrapped__ = orig_close  # type: ignore[attr-defined]
        engine_cls.get_connection = get_connection
        engine_cls.close = close

        # ---- 2. DuckDB regex for every metric that imported GX's helper --------------------
        orig_regex = metrics_util.get_dialect_regex_expression

        def get_dialect_regex_expression(column, regex, dialect, positive=True):
            if _is_duckdb(dialect):
                return duckdb_regex_expression(column, regex, positive)
            return orig_regex(column, regex, dialect, positive)

        get_dialect_regex_expression.__wrapped__ = orig_regex  # type: ignore[attr-defined]
        import great_expectations.expectations.metrics as metrics_pkg

        for mod in pkgutil.walk_packages(metrics_pkg.__path__, metrics_pkg.__name__ + "."):
            m = importlib.import_module(mod.name)
            if getattr(m, "get_dialect_regex_expression", None) is orig_regex:
                m.get_dialect_regex_expression = get_dialect_regex_expression
                _patched_modules.append(mod.name)
        if not any(n.endswith("column_values_match_regex") for n in _patched_modules):
            raise ShimError("column_values_match_regex no longer uses get_dialect_regex_expression")
        _installed = True
        log.debug("gx_duckdb shim installed; regex patched in %s", _patched_modules)
        return list(_patched_modules)


def connection_string(database: str = ":memory:") -> str:
    return f"duckdb:///{database}"


def engine_kwargs(threads: int | None = None, memory_limit: str | None = None, read_only: bool = False) -> dict:
    """``create_engine`` kwargs for a validation engine: bounded threads/memory, no extensions
    auto-installed from the network; ``read_only`` for a database file a gate must not change."""
    cfg: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "preserve_insertion_order": False,
    }
    if threads:
        cfg["threads"] = threads
    if memory_limit:
        cfg["memory_limit"] = memory_limit
    args: dict[str, Any] = {"config": cfg}
    out: dict[str, Any] = {"connect_args": args}
    if read_only:
        from sqlalchemy.pool import NullPool

        args["read_only"] = True
        out["poolclass"] = NullPool  # a connection GX gives back is closed, not kept in a pool
    return out
