{#-
  Reading the dataset metadata (dbt source YAML, `_<dept>__sources.yml`) from the dbt graph.
  This is the same metadata plugins/govlake/metadata.py reads on the Python side.
-#}

{% macro glx_merged_meta(node) -%}
  {#- dbt >= 1.10 keeps meta under config; accept the legacy top-level key too -#}
  {%- set out = {} -%}
  {%- do out.update(node.get('meta') or {}) -%}
  {%- do out.update((node.get('config') or {}).get('meta') or {}) -%}
  {{- return(out) -}}
{%- endmacro %}


{% macro glx_source_node(dept, dataset) -%}
  {%- for node in graph.sources.values() -%}
    {%- if node.source_name == dept and node.name == dataset -%}
      {{- return(node) -}}
    {%- endif -%}
  {%- endfor -%}
  {{- exceptions.raise_compiler_error("govlake: no source " ~ dept ~ "." ~ dataset ~ " declared in models/staging/" ~ dept ~ "/_" ~ dept ~ "__sources.yml") -}}
{%- endmacro %}


{% macro glx_dataset(dept, dataset) -%}
  {#- -> {dept, dataset, meta, columns: [{name, element, standard, value_map, required, grade}]} -#}
  {%- set node = glx_source_node(dept, dataset) -%}
  {%- set meta = glx_merged_meta(node) -%}
  {%- set cols = [] -%}
  {%- for col in node.columns.values() -%}
    {%- set cm = glx_merged_meta(col) -%}
    {%- if not cm.get('element') or not cm.get('standard') -%}
      {{- exceptions.raise_compiler_error("govlake: " ~ dept ~ "." ~ dataset ~ " column " ~ col.name ~ " has no meta element/standard") -}}
    {%- endif -%}
    {%- do cols.append({
        'name': col.name,
        'element': cm['element'],
        'standard': cm['standard'],
        'value_map': cm.get('value_map'),
        'required': cm.get('required', false) in (true, 'true', 'yes', 1),
        'grade': cm.get('grade'),
    }) -%}
  {%- endfor -%}
  {{- return({'dept': dept, 'dataset': dataset, 'meta': meta, 'columns': cols}) -}}
{%- endmacro %}


{% macro glx_datasets() -%}
  {#- the raw feeds the standardized layer covers: project var `glx_datasets` (['dept.dataset', ...]).
      A var, not the graph, because refs must be known when dbt parses (the graph is empty then).
      At execution we check it against the sources that declare an external_location. -#}
  {%- set out = [] -%}
  {%- for item in var('govlake_datasets') -%}
    {%- set parts = item.split('.') -%}
    {%- do out.append({'dept': parts[0], 'dataset': parts[1]}) -%}
  {%- endfor -%}
  {%- if execute -%}
    {%- set declared = [] -%}
    {%- for node in graph.sources.values() -%}
      {%- if glx_merged_meta(node).get('external_location') and node.source_name != 'lake' -%}
        {%- do declared.append(node.source_name ~ '.' ~ node.name) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if (declared | sort) != (var('govlake_datasets') | sort) -%}
      {{- exceptions.raise_compiler_error("govlake: var govlake_datasets " ~ (var('govlake_datasets') | sort) ~ " does not match the raw sources declared in YAML " ~ (declared | sort) ~ "; run `govlake scaffold` (it writes the var from the YAML)") -}}
    {%- endif -%}
  {%- endif -%}
  {{- return(out) -}}
{%- endmacro %}


{% macro glx_chk_name(dept, dataset) -%}
  {{- return('chk_' ~ dept ~ '__' ~ dataset) -}}
{%- endmacro %}


{% macro glx_stg_name(dept, dataset) -%}
  {{- return('stg_' ~ dept ~ '__' ~ dataset) -}}
{%- endmacro %}


{% macro glx_raw_relation(dept, dataset, column_names) -%}
  {#- The raw Parquet of a feed (the source's external_location). If no batch has landed yet,
      read_parquet would fail on an empty glob: return an empty relation with the same columns. -#}
  {%- set rel = source(dept, dataset) -%}
  {%- if not execute -%}
    {{- return(rel) -}}
  {%- endif -%}
  {%- set ext = rel.external or '' -%}
  {%- set m = modules.re.search("read_parquet\(\s*'([^']+)'", ext) -%}
  {%- if m -%}
    {%- set n = run_query("select count(*) from glob('" ~ m.group(1) ~ "')").columns[0].values()[0] -%}
    {%- if n == 0 -%}
      {{- return(glx_raw_relation_empty(column_names)) -}}
    {%- endif -%}
  {%- endif -%}
  {{- return(rel) -}}
{%- endmacro %}


{% macro glx_ledger_relation() -%}
  {%- set rel = source('lake', 'ledger') -%}
  {%- if not execute -%}
    {{- return(rel) -}}
  {%- endif -%}
  {%- set m = modules.re.search("read_parquet\(\s*'([^']+)'", rel.external or '') -%}
  {%- if m and run_query("select count(*) from glob('" ~ m.group(1) ~ "')").columns[0].values()[0] == 0 -%}
    {%- set empty -%}
      (select cast(null as varchar) as batch_id, cast(null as varchar) as dept, cast(null as varchar) as dataset,
              cast(null as varchar) as delivery_date, cast(null as varchar) as file_name,
              cast(null as varchar) as source_file, cast(null as varchar) as sha256,
              cast(null as bigint) as size_bytes, cast(null as bigint) as "rows",
              cast(null as varchar) as status, cast(null as varchar) as supersedes,
              cast(null as varchar) as superseded_by, cast(null as varchar) as ingested_at
       where false)
    {%- endset -%}
    {{- return(empty) -}}
  {%- endif -%}
  {{- return(rel) -}}
{%- endmacro %}


{#- ------------------------------------------------------------------ incremental standardization
  (docs/adr/0008-incremental-processing.md)
  chk_<feed> is an incremental table in the DuckDB file: each run appends only the raw batches
  (raw/<dept>/<dataset>/<batch_id>/*.parquet) it does not hold yet; a batch already
  standardized is never recomputed. Which batches passed the standardized gate is kept in
  main.govlake_gated_batches (written by govlake.transform after a passing gate); the run's
  layer outputs stg_* and quarantine_rows hold exactly the batches not gated yet, so a gate
  validates only new batches and a batch whose gate failed is validated again next run. -#}

{#- DDL of the gate-record table, run once per dbt invocation by `on-run-start` (dbt_project.yml):
    creating it from the models themselves raced when two stg_ models compiled in parallel threads
    on a first build (DuckDB: write-write conflict on the catalog). -#}
{% macro glx_gated_table_ddl() -%}
create table if not exists main.govlake_gated_batches (dept varchar, dataset varchar, batch_id varchar, run_id varchar, gated_at timestamp)
{%- endmacro %}

{% macro glx_gated_table() -%}
  {{- return('main.govlake_gated_batches') -}}
{%- endmacro %}


{% macro glx_ungated(dept, dataset, batch_col='_batch_id') -%}
  {#- a SQL condition: the row's batch has not passed the standardized gate yet -#}
  {{ batch_col }} not in (select batch_id from {{ glx_gated_table() }}
                         where dept = {{ glx_sql_string(dept) }} and dataset = {{ glx_sql_string(dataset) }})
{%- endmacro %}


{% macro glx_pending_raw_relation(dept, dataset, column_names) -%}
  {#- The raw batches of a feed that chk_ does not hold yet (all of them on a first or
      --full-refresh build): read_parquet over exactly those files. -#}
  {%- set rel = glx_raw_relation(dept, dataset, column_names) -%}
  {%- if not execute or not is_incremental() -%}
    {{- return(rel) -}}
  {%- endif -%}
  {%- set m = modules.re.search("read_parquet\(\s*'([^']+)'", rel.external or '') -%}
  {%- if not m -%}
    {{- return(rel) -}}
  {%- endif -%}
  {%- set q -%}
    select file from glob('{{ m.group(1) }}')
    where split_part(file, '/', -2) not in (select distinct _batch_id from {{ this }})
    order by file
  {%- endset -%}
  {%- set files = run_query(q).columns[0].values() -%}
  {%- if files | length == 0 -%}
    {{- return(glx_raw_relation_empty(column_names)) -}}
  {%- endif -%}
  {%- set quoted = [] -%}
  {%- for f in files -%}{%- do quoted.append("'" ~ (f | replace("'", "''")) ~ "'") -%}{%- endfor -%}
  {{- return("read_parquet([" ~ (quoted | join(', ')) ~ "], union_by_name=true)") -}}
{%- endmacro %}


{% macro glx_raw_relation_empty(column_names) -%}
  {%- set empty -%}
    (select
      {%- for c in column_names %} cast(null as varchar) as {{ adapter.quote(c) }},{% endfor %}
      cast(null as varchar) as _batch_id, cast(null as varchar) as _source_file,
      cast(null as varchar) as _source_sha256, cast(null as bigint) as _row_number,
      cast(null as timestamp) as _ingested_at, cast(null as varchar) as _delivery_date
    where false)
  {%- endset -%}
  {{- return(empty) -}}
{%- endmacro %}
