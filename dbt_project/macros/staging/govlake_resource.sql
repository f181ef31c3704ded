{#-
  govlake_resource(dept, dataset): a department's standardized dataset as a shared resource
  (信息资源, docs/adr/0015-sharing-type-and-grades.md): the standardized rows of the dataset's
  current state, one model per dataset (models/shared/resources/ds_<dept>__<dataset>.sql, one
  line each), written as Parquet into the run's candidate folder (<build_dir>/shared/) like the
  integrated products, gated by expectations/shared/ds_<dept>__<dataset>.json and published by
  govlake.transform.publish_layer. Its catalog metadata (grades, elements, sharing type) is
  derived from the same source YAML by govlake.products.dataset_product.

  Rows: those of int_<dept>__<dataset> — the feed's current state, one row per key (meta
  `key`), the last delivered winning (govlake_dedup: live batches, a snapshot feed's latest full
  delivery plus its change files, valid chk_ rows only). That table is maintained incrementally
  (only the keys a new batch touches are recomputed, docs/adr/0010), so the resource is a
  projection of it, not a second dedup of every chk_ row each day (issue 16).

  Columns: the data elements of the source YAML, in order (withheld columns — meta
  `withheld: true` — left out), declared nullable (glx_nullable_columns' reason) and ordered
  by the key (unique in int_; a keyless feed: by its lineage), so the same rows always give the same bytes (publish_layer
  publishes no new version for an unchanged file).
-#}
{% macro govlake_resource(dept, dataset) %}
  {%- set current = ref('int_' ~ dept ~ '__' ~ dataset) -%}
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
select
    {%- for e in shared %}
    case when {{ adapter.quote(e) }} is not null then {{ adapter.quote(e) }} end as {{ adapter.quote(e) }}{{ ',' if not loop.last }}
    {%- endfor %}
from {{ current }}
{%- if key %}
order by {{ glx_quoted(key) | join(', ') }}  {#- unique in int_ (one row per key): a total order; the
    lineage columns as further sort keys doubled the sort's cost at 10 M rows (12.7 vs 6.8 s) #}
{%- else %}
order by _batch_id, _source_file, _row_number
{%- endif %}
  {%- endif -%}
{% endmacro %}
