"""dbt-duckdb plugin (listed in dbt_project/profiles.yml): prepares the build directory.

DuckDB's ``COPY ... TO 'file'`` does not create parent directories, and the layer outputs are
written to ``<build_dir>/<layer>/<model>.parquet`` (see the ``external`` materialization in
``dbt_project/macros/staging/materialization_external.sql``). dbt-duckdb instantiates this
plugin when it opens the profile, so a plain ``dbt build`` works as well as ``run_dbt``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

LAYERS = ("standardized", "shared")


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # the environment, not plugin_config: a per-run value in profiles.yml would make dbt
        # re-parse the whole project on every run (it hashes the connection settings)
        lake = os.environ.get("GOVLAKE_LAKE_ROOT")
        build_dir = os.environ.get("GOVLAKE_BUILD_DIR") or (f"{lake}/candidate/dev" if lake else None)
        if build_dir:
            for layer in LAYERS:
                (Path(build_dir) / layer).mkdir(parents=True, exist_ok=True)
