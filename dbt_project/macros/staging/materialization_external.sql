{#-
  Project override of dbt-duckdb's `external` materialization (same name, same `location`
  config), for the layer outputs (standardized, quarantine, shared) that a gate validates and a
  publisher moves. Differences from the adapter's version, and why:
    - the query is written straight to Parquet with COPY (query) TO: dbt-duckdb first builds a
      table in the DuckDB file and then copies it, writing every row twice (10 M rows later);
    - an empty result is written as an empty Parquet file with its schema: dbt-duckdb inserts
      one all-NULL row into the file (and hides it in the view), which a gate or a reader of the
      published file would see;
    - the file is zstd-compressed, with row groups of `row_group_size` rows (default 122880).
  Location: config `location`, else  <build dir>/<layer>/<model>.parquet  where the build dir
  is env GOVLAKE_BUILD_DIR (the candidate folder of the run; default <lake>/candidate/dev), read
  when the model runs (not in profiles.yml: see there), and layer is standardized (staging and
  quarantine_rows, gated together) or shared. A view with the model's name is left in the
  DuckDB file over the Parquet file, so downstream refs read the file.
-#}

{% macro glx_layer_of(model) -%}
  {%- set folder = model.fqn[1] if (model.fqn | length) > 2 else '' -%}
  {%- set layers = {'staging': 'standardized', 'quarantine': 'standardized', 'shared': 'shared'} -%}
  {{- return(layers.get(folder, folder or 'other')) -}}
{%- endmacro %}


{% macro glx_build_dir() -%}
  {{- return(env_var('GOVLAKE_BUILD_DIR', env_var('GOVLAKE_LAKE_ROOT') ~ '/candidate/dev')) -}}
{%- endmacro %}


{% macro glx_external_location(model) -%}
  {{- return(glx_build_dir() ~ '/' ~ glx_layer_of(model) ~ '/' ~ model.alias ~ '.parquet') -}}
{%- endmacro %}


{% materialization external, adapter='duckdb', supported_languages=['sql'] %}
  {%- set location = render(config.get('location') or glx_external_location(model)) -%}
  {%- set compression = config.get('compression', 'zstd') -%}
  {%- set row_group_size = config.get('row_group_size', 122880) -%}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set existing_relation = load_cached_relation(this) -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {% if existing_relation is not none and existing_relation.type != 'view' %}
    {{ drop_relation_if_exists(existing_relation) }}
  {% endif %}

  {% call statement('write_parquet') -%}
    copy (
      {{ compiled_code }}
    ) to '{{ location }}' (format parquet, compression {{ compression }}, row_group_size {{ row_group_size }})
  {%- endcall %}

  {% call statement('main') -%}
    create or replace view {{ target_relation }} as select * from read_parquet('{{ location }}')
  {%- endcall %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do persist_docs(target_relation, model) %}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
