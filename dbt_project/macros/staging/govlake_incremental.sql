{#-
  Incremental shared layer (docs/adr/0010-incremental-shared-layer.md).

  The int_* tables and the tables behind the shared products are dbt `incremental` tables in the
  DuckDB file, maintained with the custom strategy `govlake_touched`: on an incremental run a
  model recomputes only its *touched keys* (delete them, insert their recomputed rows). The
  external Parquet products (dbt-duckdb #74: an external model cannot be incremental) are then a
  plain ordered COPY of those tables.

  Bookkeeping tables (schema main of the lake's DuckDB file):
    govlake_int_batches                 per feed int model: the chk batches it has incorporated
                                        (batch id, delivery date, change file?, superseded?) and
                                        a sentinel row (batch_id null) = "state recorded";
    govlake_pending_full                models rebuilt whole since the shared layer last completed
                                        (their consumers rebuild whole too);
    glx_pending_keys__<model>           keys touched since the shared layer last completed;
    glx_pending_rows__<model>           feed int models: the rows of those keys *before* the
                                        change (a consumer needs the old person ids too).
  The pending tables are written when a model is planned (compile time, like
  glx_pending_raw_relation) and accumulate until govlake.transform.build_shared has completed the
  whole shared build, which then drops them: a failed run leaves them, and the next run redoes a
  superset of the keys, so correctness never depends on a run having completed.
-#}

{% macro glx_incremental_bookkeeping() -%}
  {#- run by `on-run-start` (dbt_project.yml): the shared bookkeeping tables are created once per
      invocation, before the models that use them run on two threads (DuckDB refuses two
      concurrent `create table if not exists` of one table) -#}
  create table if not exists main.govlake_pending_full (model varchar);
  create table if not exists main.govlake_int_batches (model varchar, batch_id varchar, delivery_date varchar,
                                                       is_change boolean, superseded boolean)
{%- endmacro %}


{% macro glx_pending_full_table() -%}
  {{- return('main.govlake_pending_full') -}}
{%- endmacro %}


{% macro glx_int_batches_table() -%}
  {{- return('main.govlake_int_batches') -}}
{%- endmacro %}


{% macro glx_pending_keys_name(model_name) -%}
  {{- return('main.glx_pending_keys__' ~ model_name) -}}
{%- endmacro %}


{% macro glx_pending_rows_name(model_name) -%}
  {{- return('main.glx_pending_rows__' ~ model_name) -}}
{%- endmacro %}


{% macro glx_quoted(names) -%}
  {%- set out = [] -%}{%- for n in names -%}{%- do out.append(adapter.quote(n)) -%}{%- endfor -%}
  {{- return(out) -}}
{%- endmacro %}


{% macro glx_pending_key_columns(model_name) -%}
  {#- the key columns (quoted) of glx_pending_keys__<model_name>: the model's key -#}
  {%- set rel = api.Relation.create(database=this.database, schema='main', identifier='glx_pending_keys__' ~ model_name) -%}
  {{- return(glx_quoted(adapter.get_columns_in_relation(rel) | map(attribute='name') | list)) -}}
{%- endmacro %}


{% macro glx_table_exists(name) -%}
  {%- set parts = name.split('.') -%}
  {%- set n = run_query("select count(*) from duckdb_tables() where schema_name = '" ~ parts[0] ~ "' and table_name = '" ~ parts[1] ~ "'").columns[0].values()[0] -%}
  {{- return(n > 0) -}}
{%- endmacro %}


{% macro glx_is_pending_full(model_name) -%}
  {%- if not glx_table_exists(glx_pending_full_table()) -%}
    {{- return(false) -}}
  {%- endif -%}
  {%- set n = run_query("select count(*) from " ~ glx_pending_full_table() ~ " where model = " ~ glx_sql_string(model_name)).columns[0].values()[0] -%}
  {{- return(n > 0) -}}
{%- endmacro %}


{% macro glx_mark_full(model_name) -%}
  {#- (no table yet: no shared build has run, every model is built whole anyway) -#}
  {%- if glx_table_exists(glx_pending_full_table()) and not glx_is_pending_full(model_name) -%}
    {%- do run_query("insert into " ~ glx_pending_full_table() ~ " values (" ~ glx_sql_string(model_name) ~ ")") -%}
  {%- endif -%}
{%- endmacro %}


{% macro glx_keys_filter(mode, exprs, key_cols) -%}
  {#- a SQL condition: the row's key (exprs, one per key column) is one of the model's touched
      keys (mode 'keys'), every row (mode 'all') or none (mode 'none') -#}
  {%- if mode == 'all' -%}
    true
  {%- elif mode == 'none' -%}
    false
  {%- else -%}
    exists (select 1 from {{ glx_pending_keys_name(this.identifier) }} as glx_k
            where {% for e in exprs %}{{ e }} is not distinct from glx_k.{{ adapter.quote(key_cols[loop.index0]) }}{% if not loop.last %} and {% endif %}{% endfor %})
  {%- endif -%}
{%- endmacro %}


{#- ------------------------------------------------------------------ feed int models (govlake_dedup) -#}

{% macro glx_feed_batches_sql(dept, dataset, chk, superseded) -%}
  {#- one row per chk batch of the feed: what the dedup needs to know about it -#}
  select _batch_id as batch_id, min(_delivery_date) as delivery_date,
         bool_or({{ glx_is_change_file('_source_file') }}) as is_change,
         _batch_id in (select batch_id from {{ superseded }}
                       where dept = {{ glx_sql_string(dept) }} and dataset = {{ glx_sql_string(dataset) }}) as superseded
  from {{ chk }}
  group by _batch_id
{%- endmacro %}


{% macro glx_plan_feed(dept, dataset, chk, superseded, key, delivery) -%}
  {#- Decide how the int model of a feed is brought up to date, at compile time. Returns 'all', 'keys' or 'none'.
      - first build / --full-refresh / no recorded state / pending full rebuild: 'all';
      - snapshot feed whose latest full-snapshot date changed (a new full snapshot, or the latest
        one superseded): 'all' (a full snapshot replaces every row);
      - otherwise the changed batches (new in chk, superseded or un-superseded since, gone from
        chk) touch the keys their chk rows carry: those keys go to glx_pending_keys__<model>
        (and the int rows of those keys, before the change, to glx_pending_rows__<model>).
        Keyless incremental feeds: the batch is the key (_batch_id). Keyless snapshot feeds: 'all'. -#}
  {%- set me = this.identifier -%}
  {%- set state = glx_int_batches_table() -%}
  {%- if not is_incremental() or not glx_table_exists(state) -%}
    {%- do glx_mark_full(me) -%}
    {{- return('all') -}}
  {%- endif -%}
  {%- set cur -%}{{ glx_feed_batches_sql(dept, dataset, chk, superseded) }}{%- endset -%}
  {%- set prev -%}select * from {{ state }} where model = {{ glx_sql_string(me) }} and batch_id is not null{%- endset -%}
  {%- set q -%}
    with cur as ({{ cur }}), prev as ({{ prev }})
    select
      (select count(*) from {{ state }} where model = {{ glx_sql_string(me) }} and batch_id is null) as recorded,
      (select max(delivery_date) from cur where not is_change and not superseded)
        is not distinct from (select max(delivery_date) from prev where not is_change and not superseded) as same_latest
  {%- endset -%}
  {%- set row = run_query(q).rows[0] -%}
  {%- set q -%}
    with cur as ({{ cur }}), prev as ({{ prev }})
    select coalesce(cur.batch_id, prev.batch_id) as batch_id
    from cur full join prev on cur.batch_id = prev.batch_id
    where cur.batch_id is null or prev.batch_id is null or cur.superseded <> prev.superseded
    order by 1
  {%- endset -%}
  {%- set changed = run_query(q).columns[0].values() | list -%}
  {%- set mode = 'keys' -%}
  {%- if row[0] == 0 or glx_is_pending_full(me) -%}
    {%- set mode = 'all' -%}
  {%- elif delivery == 'snapshot' and (not row[1] or (not key and changed)) -%}
    {%- set mode = 'all' -%}
  {%- endif -%}
  {%- if mode == 'all' -%}
    {%- do glx_mark_full(me) -%}
    {{- return('all') -}}
  {%- endif -%}
  {%- set quoted = glx_quoted(key if key else ['_batch_id']) -%}
  {%- set pk = glx_pending_keys_name(me) -%}
  {%- set pr = glx_pending_rows_name(me) -%}
  {%- do run_query("create table if not exists " ~ pk ~ " as select " ~ (quoted | join(', ')) ~ " from " ~ this ~ " where false") -%}
  {%- do run_query("create table if not exists " ~ pr ~ " as select * from " ~ this ~ " where false") -%}
  {%- if changed -%}
    {%- set blist = [] -%}{%- for b in changed -%}{%- do blist.append(glx_sql_string(b)) -%}{%- endfor -%}
    {%- set touched -%}
      select distinct {{ quoted | join(', ') }} from {{ chk }} where _batch_id in ({{ blist | join(', ') }})
    {%- endset -%}
    {%- do run_query("insert into " ~ pr ~ " select t.* from " ~ this ~ " as t semi join (" ~ touched ~ ") as k on "
                     ~ glx_not_distinct('t', 'k', quoted)) -%}
    {%- do run_query("insert into " ~ pk ~ " " ~ touched) -%}
  {%- endif -%}
  {%- set n = run_query("select count(*) from " ~ pk).columns[0].values()[0] -%}
  {{- return('keys' if n > 0 else 'none') -}}
{%- endmacro %}


{% macro glx_not_distinct(a, b, quoted_cols) -%}
  {%- for c in quoted_cols -%}{{ a }}.{{ c }} is not distinct from {{ b }}.{{ c }}{% if not loop.last %} and {% endif %}{%- endfor -%}
{%- endmacro %}


{% macro glx_record_int_batches(dept, dataset) -%}
  {#- post-hook of a feed int model (inside its transaction): the chk batches it now reflects -#}
  delete from {{ glx_int_batches_table() }} where model = {{ glx_sql_string(this.identifier) }};
  insert into {{ glx_int_batches_table() }}
  select {{ glx_sql_string(this.identifier) }}, null, null, null, null
  union all
  select {{ glx_sql_string(this.identifier) }}, batch_id, delivery_date, is_change, superseded
  from ({{ glx_feed_batches_sql(dept, dataset, ref(glx_chk_name(dept, dataset)), ref('int_superseded_batches')) }})
{%- endmacro %}


{#- ------------------------------------------------------------------ derived models -#}

{% macro glx_touched_from(model_name, columns, as_name) -%}
  {#- the values of `columns` (person ids, ...) in the rows of a feed int model touched since the
      shared layer last completed: its rows before the change (pending rows) and now (current
      rows of the pending keys). Empty when the model has no pending keys. -#}
  {%- set pk = glx_pending_keys_name(model_name) -%}
  {%- set pr = glx_pending_rows_name(model_name) -%}
  {%- if not glx_table_exists(pk) -%}
    {{- return('select cast(null as varchar) as ' ~ as_name ~ ' where false') -}}
  {%- endif -%}
  {%- set keycols = glx_pending_key_columns(model_name) -%}
  {%- set parts = [] -%}
  {%- for c in columns -%}
    {%- do parts.append('select ' ~ c ~ ' as ' ~ as_name ~ ' from ' ~ pr) -%}
    {%- do parts.append('select t.' ~ c ~ ' as ' ~ as_name ~ ' from main.' ~ model_name ~ ' as t semi join ' ~ pk ~ ' as k on ' ~ glx_not_distinct('t', 'k', keycols)) -%}
  {%- endfor -%}
  {{- return(parts | join('\nunion all\n')) -}}
{%- endmacro %}


{% macro glx_touched_keys_of(model_name, column, as_name) -%}
  {#- the touched keys of a derived model (its pending keys), as `as_name` -#}
  {%- set pk = glx_pending_keys_name(model_name) -%}
  {%- if not glx_table_exists(pk) -%}
    {{- return('select cast(null as varchar) as ' ~ as_name ~ ' where false') -}}
  {%- endif -%}
  {{- return('select ' ~ column ~ ' as ' ~ as_name ~ ' from ' ~ pk) -}}
{%- endmacro %}


{% macro glx_plan_derived(key, upstreams, touched_sql) -%}
  {#- Decide how a model derived from other incremental models is brought up to date, at
      compile time: 'all' on a first build / --full-refresh, or when an upstream model or this
      one is pending a full rebuild; else the keys `touched_sql` yields (derived from the
      upstreams' pending keys and rows) are added to glx_pending_keys__<model>: 'keys', or
      'none' when there are none. -#}
  {%- if not execute -%}
    {{- return('all') -}}
  {%- endif -%}
  {%- set me = this.identifier -%}
  {%- set full = [not is_incremental() or glx_is_pending_full(me)] -%}
  {%- for u in upstreams -%}
    {%- if glx_is_pending_full(u) -%}{%- do full.append(true) -%}{%- endif -%}
  {%- endfor -%}
  {%- if true in full -%}
    {%- do glx_mark_full(me) -%}
    {{- return('all') -}}
  {%- endif -%}
  {%- set quoted = glx_quoted(key) -%}
  {%- set pk = glx_pending_keys_name(me) -%}
  {%- do run_query("create table if not exists " ~ pk ~ " as select " ~ (quoted | join(', ')) ~ " from " ~ this ~ " where false") -%}
  {%- do run_query("insert into " ~ pk ~ " select distinct * from (" ~ touched_sql ~ ") as t where "
                   ~ (quoted | join(' is not null and ')) ~ " is not null") -%}
  {%- set n = run_query("select count(*) from " ~ pk).columns[0].values()[0] -%}
  {{- return('keys' if n > 0 else 'none') -}}
{%- endmacro %}


{% macro glx_plan_touched_by(key, sources) -%}
  {#- glx_plan_derived for a model keyed by one column `key` whose keys are the values of columns
      of feed int models: sources = {int model: [columns holding a key value]} -#}
  {%- set touched = [] -%}
  {%- if execute -%}
    {%- for m, cols in sources.items() -%}{%- do touched.append(glx_touched_from(m, cols, key)) -%}{%- endfor -%}
  {%- endif -%}
  {{- return(glx_plan_derived([key], sources.keys() | list, touched | join('\nunion all\n'))) -}}
{%- endmacro %}


{#- ------------------------------------------------------------------ the incremental strategy -#}

{% macro get_incremental_govlake_touched_sql(arg_dict) -%}
  {#- delete the touched keys (every row when the model is pending a full rebuild), insert the
      recomputed rows. The key columns are those of glx_pending_keys__<model>. -#}
  {%- set target = arg_dict['target_relation'] -%}
  {%- set temp = arg_dict['temp_relation'] -%}
  {%- set cols = glx_quoted(arg_dict['dest_columns'] | map(attribute='name') | list) -%}
  {%- if glx_is_pending_full(target.identifier) %}
delete from {{ target }};
  {%- else -%}
  {%- set pk = glx_pending_keys_name(target.identifier) -%}
  {%- set keycols = glx_pending_key_columns(target.identifier) -%}
  {%- if not keycols -%}
    {{- exceptions.raise_compiler_error("govlake: no touched-key table " ~ pk ~ " for " ~ target) -}}
  {%- endif %}
delete from {{ target }} as t using (select distinct * from {{ pk }}) as k
where {{ glx_not_distinct('t', 'k', keycols) }};
  {%- endif %}
insert into {{ target }} ({{ cols | join(', ') }})
select {{ cols | join(', ') }} from {{ temp }}
{%- endmacro %}


{#- ------------------------------------------------------------------ product files -#}

{% macro glx_nullable_columns(relation) -%}
  {#- The select list of a product file: every column of `relation`, unchanged, declared
      nullable (optional) in the Parquet schema. DuckDB writes a column as *required* when the
      statistics of its input say it holds no null, and a table's statistics depend on its
      history (a deleted row's null still counts): an incrementally maintained table and a fresh
      full build with the same rows would give different file schemas, hence different bytes.
      `case when c is not null then c end` is the identity on values; its statistics say "may
      be null", so the schema no longer depends on how the table was built. -#}
  {%- if not execute -%}
    {{- return('*') -}}
  {%- endif -%}
  {%- set out = [] -%}
  {%- for c in adapter.get_columns_in_relation(relation) -%}
    {%- set q = adapter.quote(c.name) -%}
    {%- do out.append('case when ' ~ q ~ ' is not null then ' ~ q ~ ' end as ' ~ q) -%}
  {%- endfor -%}
  {{- return(out | join(',\n    ')) -}}
{%- endmacro %}
