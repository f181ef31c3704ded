{#-
  govlake_dedup(dept, dataset): the current rows of a feed across batches and redeliveries.

  - Batches the delivery ledger marks `superseded_by` (a corrected file replaced them) are ignored.
  - snapshot feeds (meta delivery: snapshot): only the rows of the latest delivery date among the
    feed's live batches (a later snapshot replaces an earlier one entirely).
    A snapshot feed may also receive change files (file name containing `.delta.`, e.g.
    household_registration_20261121.delta.csv): new or changed rows only. They apply on top of
    the latest full snapshot when delivered on or after its date (docs/adr/0008): the
    latest date is taken over full snapshots only, and change files rank above the snapshot
    of the same date.
  - incremental feeds: the union of all live batches.
  - then one row per key (meta `key`, in data-element names), keeping the latest delivery;
    ties broken by batch id, source file and row number (all descending: the last delivered wins),
    so the result does not depend on read order. Only keys with more than one current row are
    ranked; the others pass as they are.
  The latest date is taken over every raw row of the feed (chk_ model), so a delivery whose rows
  were all quarantined still replaces the previous snapshot. Valid rows are read from chk_ (all
  batches, standardized once each), not from stg_ (the run's not-yet-gated batches only).

  The int model is an incremental table (docs/adr/0010, macros/staging/govlake_incremental.sql):
  glx_plan_feed decides at compile time whether every key is recomputed ('all': first build,
  --full-refresh, a new full snapshot) or only the keys the changed batches touch ('keys'); the
  dedup below is the same query either way, restricted to those keys. The model file configures
  materialized='incremental', incremental_strategy='govlake_touched' and the post-hook
  glx_record_int_batches.
-#}
{% macro glx_is_change_file(source_file_col) -%}
  ({{ source_file_col }} like '%.delta.%')
{%- endmacro %}

{% macro govlake_dedup(dept, dataset) %}
  {#- depends on stg_ (so the shared build follows the standardized one) but reads chk_ -#}
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
  {{- glx_check_key_and_delivery(dept, dataset, key, elements, delivery) }}
  {%- set mode = glx_plan_feed(dept, dataset, chk, superseded, key, delivery) -%}
  {%- set kcols = key if key else ['_batch_id'] -%}
  {%- set kexprs = [] -%}{%- for k in kcols -%}{%- do kexprs.append('s.' ~ adapter.quote(k)) -%}{%- endfor %}
-- govlake_dedup: {{ mode }} keys ({{ kcols | join(', ') }})
with live as (
    select
        {%- for e in elements %}
        s.{{ adapter.quote(e) }},
        {%- endfor %}
        s._batch_id, s._source_file, s._source_sha256, s._row_number, s._delivery_date
    from {{ chk }} as s
    anti join {{ superseded }} as x
        on x.dept = {{ glx_sql_string(dept) }} and x.dataset = {{ glx_sql_string(dataset) }}
       and x.batch_id = s._batch_id
    where len(s._errors) = 0
      and {{ glx_keys_filter(mode, kexprs, kcols) }}
),
{{ glx_current_rows(chk, superseded, dept, dataset, delivery) }}
{%- if key %},
{{ glx_repeated_keys(key) }}
{{ glx_last_delivered_per_key(key) }}
{%- else %}
select * from current_rows
{%- endif %}
  {%- endif -%}
{% endmacro %}

{#- The current rows of a feed (over the CTE ``live``): a snapshot feed keeps its latest full
    delivery date (over every raw row of chk_, so an all-quarantined delivery still replaces the
    previous snapshot) plus change files delivered on or after it; an incremental feed keeps
    every live batch (govlake_resource projects the int_ table govlake_dedup builds: one rule). -#}
{% macro glx_current_rows(chk, superseded, dept, dataset, delivery) -%}
{%- if delivery == 'snapshot' -%}
latest_date as (
    select max(c._delivery_date) as d
    from {{ chk }} as c
    anti join {{ superseded }} as x
        on x.dept = {{ glx_sql_string(dept) }} and x.dataset = {{ glx_sql_string(dataset) }}
       and x.batch_id = c._batch_id
    where not {{ glx_is_change_file('c._source_file') }}
),
current_rows as (
    select live.* from live, latest_date
    where (live._delivery_date = latest_date.d and not {{ glx_is_change_file('live._source_file') }})
       or (live._delivery_date >= latest_date.d and {{ glx_is_change_file('live._source_file') }})
)
{%- else -%}
current_rows as (
    select * from live
)
{%- endif -%}
{%- endmacro %}

{#- Keys with more than one current row (few): only their rows need the ranking window; a key
    delivered once is its own latest row (a hash aggregate on the key, not a sort of all rows). -#}
{% macro glx_repeated_keys(key) -%}
repeated_keys as (
    select {{ glx_quoted(key) | join(', ') }} from current_rows group by all having count(*) > 1
)
{%- endmacro %}

{#- One row per key, the last delivered winning (latest delivery date, a change file above the
    snapshot of the same date, then batch id, source file and row number, all descending). -#}
{% macro glx_last_delivered_per_key(key) -%}
{%- set qkey = glx_quoted(key) -%}
{%- set same_key = [] -%}{%- for k in qkey -%}{%- do same_key.append('c.' ~ k ~ ' is not distinct from d.' ~ k) -%}{%- endfor -%}
select c.* from current_rows as c anti join repeated_keys as d on {{ same_key | join(' and ') }}
union all
select c.* from current_rows as c semi join repeated_keys as d on {{ same_key | join(' and ') }}
qualify row_number() over (
    partition by c.{{ qkey | join(', c.') }}
    order by _delivery_date desc, {{ glx_is_change_file('_source_file') }} desc,
             _batch_id desc, _source_file desc, _row_number desc
) = 1
{%- endmacro %}

{#- A feed's meta key must name data elements and its delivery be snapshot or incremental
    (govlake_dedup and govlake_resource read both). -#}
{% macro glx_check_key_and_delivery(dept, dataset, key, elements, delivery) -%}
  {%- for k in key if k not in elements -%}
    {{- exceptions.raise_compiler_error("govlake: " ~ dept ~ "." ~ dataset ~ " meta key " ~ k ~ " is not a data element of the feed") -}}
  {%- endfor -%}
  {%- if delivery not in ('snapshot', 'incremental') -%}
    {{- exceptions.raise_compiler_error("govlake: " ~ dept ~ "." ~ dataset ~ " meta delivery must be snapshot or incremental, not " ~ delivery) -}}
  {%- endif -%}
{%- endmacro %}
