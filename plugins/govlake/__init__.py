"""govlake: the government data-sharing lake.

Logic lives here; ``dags/`` only wires it into Airflow and ``dbt_project/`` holds the SQL.
"""

import os as _os

__version__ = "0.1.0"

# Everything govlake writes (landing copies, raw and published Parquet, the DuckDB file, the
# audit log, keys, the service's state) is private to its OS user: no group or other bits, in
# every process that imports the package (CLI, Airflow tasks, the sharing service).
_os.umask(_os.umask(0o077) | 0o077)
