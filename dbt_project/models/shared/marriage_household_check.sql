-- The shared product, written as Parquet into the run's candidate folder (external
-- materialization, ADR 0009) for the gate and the publisher. dbt-duckdb cannot make an external
-- model incremental (dbt-duckdb #74), so the rows are maintained incrementally in the DuckDB
-- table int_marriage_household_check (docs/adr/0010) and this model is one ordered COPY of it: ordered by the
-- unique key, so the same rows always give the same bytes.
select * from {{ ref('int_marriage_household_check') }}
order by id_number
