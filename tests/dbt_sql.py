"""Compile dbt SQL (the standardization macros) to plain DuckDB SQL, in-process.

Test support (tests/integration/test_standard_macros.py), not part of the runtime package::

    from dbt_sql import MacroProject
    with MacroProject() as p:                      # temp dbt project: macros/standards + seeds
        sql = p.compile_inline("select {{ gb11643_id_number('v') }} as std from t")
        p.seed()                                   # dbt seed: load the code tables

``MacroProject`` builds a small dbt project in a temporary folder holding only the project's
``macros/standards`` and ``seeds`` (so compiling does not depend on the state of the models
other people are editing), with a DuckDB profile under its own ``<lake>/_meta/``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from govlake import config
from govlake.dbt import DbtError

_PROJECT_YML = """\
name: govlake_macros
version: "0.1.0"
config-version: 2
profile: govlake_macros
macro-paths: ["macros"]
seed-paths: ["seeds"]
model-paths: ["models"]
target-path: "target"
flags:
  send_anonymous_usage_stats: false
"""

_PROFILES_YML = """\
govlake_macros:
  target: local
  outputs:
    local:
      type: duckdb
      path: "{db}"
      threads: 1
"""


def _invoke(args: list[str]):
    """Run one dbt command in-process; raise govlake.dbt.DbtError (with dbt's message) if it fails."""
    from dbt.cli.main import dbtRunner

    res = dbtRunner().invoke(args)
    if not res.success:
        raise DbtError(f"dbt {' '.join(args[:1])} failed: {res.exception or res.result}")
    return res.result


class MacroProject:
    """A throw-away dbt project with the standardization macros and the code-table seeds."""

    def __init__(self, workdir: Path | None = None, source: Path | None = None):
        self._own_tmp = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="govlake-macros-"))
        self.source = Path(source or config.dbt_project_dir())
        self.project_dir = self.workdir / "project"
        self.lake_root = self.workdir / "lake"
        self.db_path = self.lake_root / "_meta" / "macros.duckdb"

    def __enter__(self) -> "MacroProject":
        return self.build()

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self) -> "MacroProject":
        p = self.project_dir
        (p / "macros").mkdir(parents=True, exist_ok=True)
        (p / "models").mkdir(exist_ok=True)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.source / "macros" / "standards", p / "macros" / "standards", dirs_exist_ok=True)
        shutil.copytree(self.source / "seeds", p / "seeds", dirs_exist_ok=True)
        (p / "dbt_project.yml").write_text(_PROJECT_YML, encoding="utf-8")
        (p / "profiles.yml").write_text(_PROFILES_YML.format(db=self.db_path.as_posix()), encoding="utf-8")
        return self

    def close(self) -> None:
        if self._own_tmp:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _common(self) -> list[str]:
        return ["--project-dir", str(self.project_dir), "--profiles-dir", str(self.project_dir)]

    def compile_inline(self, sql: str) -> str:
        """The SQL that dbt renders for ``sql`` (Jinja with the project's macros)."""
        res = _invoke(["--log-level", "none", "compile", "--inline", sql, *self._common()])
        return res.results[0].node.compiled_code

    def seed(self) -> list[str]:
        """``dbt seed --full-refresh``; returns the loaded seed names."""
        res = _invoke(["--quiet", "seed", "--full-refresh", *self._common()])
        return [r.node.name for r in res.results]
