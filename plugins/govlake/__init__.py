"""govlake: the government data-sharing lake.

Logic lives here; ``dags/`` only wires it into Airflow and ``dbt_project/`` holds the SQL.
"""

__version__ = "0.1.0"
