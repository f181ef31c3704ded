{#-
  govlake_resource(dept, dataset): a department's standardized dataset as a shared resource
  (信息资源, docs/adr/0015-sharing-type-and-grades.md): the standardized rows of the dataset's
  current state, one model per dataset (models/shared/resources/ds_<dept>__<dataset>.sql, one
  line each), written as Parquet into the run's candidate folder (<build_dir>/shared/) like the
  integrated products, gated by expectations/shared/ds_<dept>__<dataset>.json and published by
  govlake.transform.publish_layer. Its catalog metadata (grades, elements, sharing type) is
  derived from the same source YAML by govlake.products.dataset_product.

  Rows: the valid rows (`_errors` empty) of chk_<dept>__<dataset> — every batch standardized
  once, incremental — from the live batches: batches the ledger marks superseded are ignored;
  a snapshot feed keeps its latest full delivery date (over every raw row, as govlake_dedup)
  plus change files (`.delta.`) delivered on or after it; an incremental feed keeps every live
  batch. Then one row per key (meta `key`), the last delivered winning — the same rule as
  govlake_dedup, so the resource holds what int_<dept>__<dataset> holds, computed from chk_.
  Only keys with more than one current row are ranked.

  Columns: the data elements of the source YAML, in order (withheld columns — meta
  `withheld: true` — left out), declared nullable (glx_nullable_columns' reason) and ordered
  by the key, then the lineage, so the same rows always give the same bytes (publish_layer
  publishes no new version for an unchanged file).
-#}
{% macro govlake_resource(dept, dataset) %}
  {%- set stg = ref(glx_stg_name(dept, dataset)) -%}
  {%- set chk = ref(glx_chk_name(dept, dataset)) -%}
  {%- set superseded = ref('int_superseded_batches') -%}
  {%- if not execute -%}
    select 1 as _parse_placeholder
  {%- else -%}
  {%- set ds = glx_dataset(dept, dataset) -%}
  {%- set node = glx_source_node(dept, dataset) -%}
  {%- set withheld = [] -%}
  {%- for col in node.columns.values() -%}
    {%- if glx_merged_meta(col).get('withheld') in (true, 'true', 'yes', 1) -%}
      {%- do withheld.append(glx_merged_meta(col).get('element')) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- set delivery = ds.meta.get('delivery', 'snapshot') -%}
  {%- set key = ds.meta.get('key') or [] -%}
  {%- set elements = ds.columns | map(attribute='element') | list -%}
  {%- set shared = [] -%}{%- for e in elements if e not in withheld -%}{%- do shared.append(e) -%}{%- endfor -%}
  {{- glx_check_key_and_delivery(dept, dataset, key, elements, delivery) }}
with live as (
    select
        {%- for e in elements %}
        s.{{ adapter.quote(e) }},
        {%- endfor %}
        s._batch_id, s._source_file, s._row_number, s._delivery_date
    from {{ chk }} as s
    anti join {{ superseded }} as x
        on x.dept = {{ glx_sql_string(dept) }} and x.dataset = {{ glx_sql_string(dataset) }}
       and x.batch_id = s._batch_id
    where len(s._errors) = 0
),
{{ glx_current_rows(chk, superseded, dept, dataset, delivery) }},
{%- if key %}
{{ glx_repeated_keys(key) }},
resource_rows as (
{{ glx_last_delivered_per_key(key) }}
)
{%- else %}
resource_rows as (
    select * from current_rows
)
{%- endif %}
select
    {%- for e in shared %}
    case when {{ adapter.quote(e) }} is not null then {{ adapter.quote(e) }} end as {{ adapter.quote(e) }}{{ ',' if not loop.last }}
    {%- endfor %}
from resource_rows
order by
    {%- for k in key %} {{ adapter.quote(k) }},{% endfor %} _batch_id, _source_file, _row_number
  {%- endif -%}
{% endmacro %}
