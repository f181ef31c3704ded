{#-
  govlake_dedup(dept, dataset): the current rows of a feed across batches and redeliveries.

  - Batches the delivery ledger marks `superseded_by` (a corrected file replaced them) are ignored.
  - snapshot feeds (meta delivery: snapshot): only the rows of the latest delivery date among the
    feed's live batches (a later snapshot replaces an earlier one entirely).
  - incremental feeds: the union of all live batches.
  - then one row per key (meta `key`, in data-element names), keeping the latest delivery;
    ties broken by batch id, source file and row number (all descending: the last delivered wins),
    so the result does not depend on read order.
  The latest date is taken over every raw row of the feed (chk_ model), so a delivery whose rows
  were all quarantined still replaces the previous snapshot.
-#}
{% macro govlake_dedup(dept, dataset) %}
  {%- set stg = ref(glx_stg_name(dept, dataset)) -%}
  {%- set chk = ref(glx_chk_name(dept, dataset)) -%}
  {%- set superseded = ref('int_superseded_batches') -%}
  {%- if not execute -%}
    select 1 as _parse_placeholder
  {%- else -%}
  {%- set ds = glx_dataset(dept, dataset) -%}
  {%- set delivery = ds.meta.get('delivery', 'snapshot') -%}
  {%- set key = ds.meta.get('key') or [] -%}
  {%- set elements = ds.columns | map(attribute='element') | list -%}
  {%- for k in key if k not in elements -%}
    {{- exceptions.raise_compiler_error("govlake: " ~ dept ~ "." ~ dataset ~ " meta key " ~ k ~ " is not a data element of the feed") -}}
  {%- endfor -%}
  {%- if delivery not in ('snapshot', 'incremental') -%}
    {{- exceptions.raise_compiler_error("govlake: " ~ dept ~ "." ~ dataset ~ " meta delivery must be snapshot or incremental, not " ~ delivery) -}}
  {%- endif %}
with live as (
    select s.*
    from {{ stg }} as s
    anti join {{ superseded }} as x
        on x.dept = {{ glx_sql_string(dept) }} and x.dataset = {{ glx_sql_string(dataset) }}
       and x.batch_id = s._batch_id
),
{%- if delivery == 'snapshot' %}
latest_date as (
    select max(c._delivery_date) as d
    from {{ chk }} as c
    anti join {{ superseded }} as x
        on x.dept = {{ glx_sql_string(dept) }} and x.dataset = {{ glx_sql_string(dataset) }}
       and x.batch_id = c._batch_id
),
current_rows as (
    select live.* from live, latest_date where live._delivery_date = latest_date.d
)
{%- else %}
current_rows as (
    select * from live
)
{%- endif %}
select *
from current_rows
{%- if key %}
qualify row_number() over (
    partition by {{ key | join(', ') }}
    order by _delivery_date desc, _batch_id desc, _source_file desc, _row_number desc
) = 1
{%- endif %}
  {%- endif -%}
{% endmacro %}
