-- The shared product, written as Parquet into the run's candidate folder (external
-- materialization, ADR 0009) for the gate and the publisher. dbt-duckdb cannot make an external
-- model incremental (dbt-duckdb #74), so the rows are maintained incrementally in the DuckDB
-- table int_population_base (docs/adr/0010) and this model is one ordered copy of it: ordered by
-- the unique key and with a schema that does not depend on the table's history
-- (glx_nullable_columns), so the same rows always give the same bytes.
select
    {{ glx_nullable_columns(ref('int_population_base')) }}
from {{ ref('int_population_base') }}
order by id_number
