{#-
  govlake_quarantine_rows(): one row per (failed raw row × rule), across all feeds in
  var('govlake_datasets'), for the batches not gated yet (as the stg_ models). Reads each chk_
  model once and unnests its `_errors` list. `original_value` is the value as delivered; in
  `message` a control character in it is shown as U+FFFD (text.control_character names it).
-#}
{% macro govlake_quarantine_rows() %}
  {%- set feeds = glx_datasets() -%}
  {%- for f in feeds %}
  {%- set chk = ref(glx_chk_name(f.dept, f.dataset)) %}
  {%- if not loop.first %}
union all
  {%- endif %}
select
    {{ glx_sql_string(f.dept) }} as dept,
    {{ glx_sql_string(f.dataset) }} as dataset,
    _batch_id,
    _source_file,
    _row_number,
    e.rule as rule,
    e.col as "column",
    e.val as original_value,
    format('{} row {}{}: rule {}{}{}',
           _source_file, _row_number,
           case when e.col is null then '' else ', column ' || e.col end,
           e.rule,
           case when e.col is null then '' when e.val is null then ' (value: NULL)'
                -- control characters shown as U+FFFD: the message is read on screens and in logs
                -- (original_value keeps the delivered bytes; the detail names the character)
                else ' (value: ''' || regexp_replace(e.val, '{{ std_control_character_class() }}', chr(65533), 'g') || ''')' end,
           case when e.detail is null then '' else ' — ' || e.detail end) as message
from (
    select _batch_id, _source_file, _row_number, unnest(_errors) as e
    from {{ chk }}
    where len(_errors) > 0
      and {{ glx_ungated(f.dept, f.dataset) }}
)
  {%- endfor %}
order by dept, dataset, _batch_id, _source_file, _row_number, rule, "column"
{% endmacro %}


{#- Row conservation: for every feed and batch of this build (not gated yet), raw rows = staging
    rows + distinct quarantined rows. Returns the violating (feed, batch) pairs; a dbt singular test fails on any row. -#}
{% macro govlake_row_conservation() %}
  {%- set feeds = glx_datasets() -%}
with raw_counts as (
  {%- for f in feeds %}
  {%- if not loop.first %} union all{% endif %}
    select {{ glx_sql_string(f.dept) }} as dept, {{ glx_sql_string(f.dataset) }} as dataset,
           _batch_id, count(*) as n
    from {{ glx_raw_relation(f.dept, f.dataset, glx_dataset(f.dept, f.dataset).columns | map(attribute='name') | list if execute else []) }}
    where {{ glx_ungated(f.dept, f.dataset) }}
    group by all
  {%- endfor %}
),
staged_counts as (
  {%- for f in feeds %}
  {%- if not loop.first %} union all{% endif %}
    select {{ glx_sql_string(f.dept) }} as dept, {{ glx_sql_string(f.dataset) }} as dataset,
           _batch_id, count(*) as n
    from {{ ref(glx_stg_name(f.dept, f.dataset)) }}
    group by all
  {%- endfor %}
),
quarantined_counts as (
    select dept, dataset, _batch_id, count(distinct (_source_file, _row_number)) as n
    from {{ ref('quarantine_rows') }}
    group by all
)
select
    coalesce(r.dept, s.dept, q.dept) as dept,
    coalesce(r.dataset, s.dataset, q.dataset) as dataset,
    coalesce(r._batch_id, s._batch_id, q._batch_id) as _batch_id,
    coalesce(r.n, 0) as raw_rows,
    coalesce(s.n, 0) as staged_rows,
    coalesce(q.n, 0) as quarantined_rows
from raw_counts r
full outer join staged_counts s
    on s.dept = r.dept and s.dataset = r.dataset and s._batch_id = r._batch_id
full outer join quarantined_counts q
    on q.dept = coalesce(r.dept, s.dept) and q.dataset = coalesce(r.dataset, s.dataset)
   and q._batch_id = coalesce(r._batch_id, s._batch_id)
where coalesce(r.n, 0) <> coalesce(s.n, 0) + coalesce(q.n, 0)
{% endmacro %}
