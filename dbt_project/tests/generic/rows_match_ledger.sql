{#-
  rows_match_ledger(feed): for every batch of `feed` ('dept.dataset') the delivery ledger records
  as ingested, the model holds exactly as many rows as the ledger says the batch delivered — over
  the whole history, every run. For the chk_ tables: each delivered row was checked exactly once
  (no batch missing, none appended twice). Counts per batch: one aggregate on a low-cardinality
  column, cheap at any size.
-#}
{% test rows_match_ledger(model, feed) %}
{%- set f = feed.split('.') %}
with held as (
    select _batch_id as batch_id, count(*) as n
    from {{ model }}
    group by all
),

delivered as (
    select batch_id, "rows" as n
    from {{ glx_ledger_relation() }}
    where dept = {{ glx_sql_string(f[0]) }} and dataset = {{ glx_sql_string(f[1]) }}
      and status = 'ingested'
)

select coalesce(h.batch_id, d.batch_id) as batch_id, coalesce(h.n, 0) as model_rows, coalesce(d.n, 0) as ledger_rows
from held as h
full outer join delivered as d on d.batch_id = h.batch_id
where coalesce(h.n, 0) <> coalesce(d.n, 0)
{% endtest %}
