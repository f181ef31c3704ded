{#-
  govlake_check(dept, dataset): every raw row of a feed, once, with
    - each delivered column standardized to its data element (value computed once),
    - `_errors`: the list of rules the row fails, as structs {rule, col, val, detail}
      (empty list = the row is valid and goes to staging; otherwise it goes to quarantine_rows).

  Driven entirely by the column meta in `_<dept>__sources.yml`:
    element   ASCII name of the output column
    standard  which rule applies (see glx_std_value / glx_std_error)
    value_map name of the per-source map in seed code_value_map (gender, marital status, codes)
    required  empty value -> required.missing

  Plausibility of a valid value (glx_plausibility_rule; driven by `standard` and `element`, so a
  new feed gets them from its YAML). A value that passes its standard can still be one no
  delivery can hold; compared with the row's delivery date (`_delivery_date`, the landing
  folder date that ingest wrote into every raw row and into the ledger, raw/_ledger.parquet):
    standard date, element birth_date -> birth_date.in_future     (born after the delivery date)
    standard date, any other element  -> <element>.after_delivery  (e.g. event_date.after_delivery,
                                         registration_date.after_delivery: an event or a
                                         registration the delivery cannot know of yet)
    standard id_number                -> birth_date.in_future     (the birth date in positions 7-14
                                         is after the delivery date; after today it is already
                                         id_number.birth_date)
    standard name / text / address    -> text.control_character   (the standardized value holds a
                                         C0/C1 control character, e.g. NUL: std_control_character_error)
  The quarantine message's detail says which date / character and the delivery date.

  Record-level checks (where the record has the elements):
    id_number + birth_date   -> id_number.birth_mismatch (birth date differs from ID[6:14])
    id_number + gender_code  -> id_number.gender_mismatch (gender differs from ID sequence parity)
  Exact duplicates within one delivered file (all delivered columns equal): the first copy
  (lowest _row_number) stays, later copies fail `row.duplicate`.

  The raw relation is read once; the value maps are small hash joins. chk_ models are
  incremental: only raw batches the table does not hold yet are read (glx_pending_raw_relation).
-#}

{%- macro glx_sql_string(s) -%}
  '{{ s | replace("'", "''") }}'
{%- endmacro -%}


{%- macro glx_std(name, expr) -%}
  {#- call the standards macro `name` (macros/standards/) on a SQL expression -#}
  {%- set m = context.get(name) -%}
  {%- if not m -%}
    {{- exceptions.raise_compiler_error("govlake: standardization macro " ~ name ~ " is not defined (macros/standards/)") -}}
  {%- endif -%}
  ({{ m(expr, *varargs) }})
{%- endmacro -%}


{%- macro glx_id_parts(prefix, element) -%}
  {#- the GB 11643 step columns of an id_number element: (normalised, body, check character) -#}
  {{- return([prefix ~ adapter.quote('_ids_' ~ element), prefix ~ adapter.quote('_idb_' ~ element), prefix ~ adapter.quote('_idc_' ~ element)]) -}}
{%- endmacro -%}


{%- macro glx_is_empty(txt_expr) -%}
  ({{ txt_expr }} is null)
{%- endmacro -%}


{%- macro glx_default_value_map(col) -%}
  {%- set defaults = {'marital_status': 'marital_status_cn', 'ethnicity': 'ethnicity_cn'} -%}
  {%- set vm = col.value_map or defaults.get(col.standard) -%}
  {%- if not vm -%}
    {{- exceptions.raise_compiler_error("govlake: column " ~ col.name ~ " has standard " ~ col.standard ~ " but no value_map") -}}
  {%- endif -%}
  {{- return(vm) -}}
{%- endmacro -%}


{%- macro glx_map_key(expr) -%}
  lower({{ glx_std('std_text', expr) }})
{%- endmacro -%}

{#- standard -> (value macro, error macro) in macros/standards/ -#}
{%- macro glx_rule_macros(standard) -%}
  {%- set rules = {
      'id_number': ('gb11643_id_number', 'gb11643_id_number_error'),
      'uscc': ('gb32100_uscc', 'gb32100_uscc_error'),
      'date': ('std_date', 'std_date_error'),
      'phone': ('std_phone', 'std_phone_error'),
      'division_code': ('std_division_code', 'std_division_code_error'),
      'year_month': ('std_year_month', 'std_year_month_error'),
      'decimal': ('std_decimal', 'std_decimal_error'),
      'name': ('std_name', none),
      'text': ('std_text', none),
      'address': ('std_text', none),
  } -%}
  {{- return(rules.get(standard)) -}}
{%- endmacro -%}


{%- macro glx_std_value(col, ref_expr, txt_expr, map_code) -%}
  {%- set s = col.standard -%}
  {%- set rm = glx_rule_macros(s) -%}
  {%- if rm -%} {{ glx_std(rm[0], ref_expr) }}
  {%- elif s == 'marital_status' -%}
    case when {{ glx_is_empty(txt_expr) }} then '90' else {{ map_code }} end
  {%- elif s in ('gender', 'ethnicity', 'code') -%}
    {{ map_code }}
  {%- else -%}
    {{- exceptions.raise_compiler_error("govlake: unknown standard " ~ s ~ " for column " ~ col.name) -}}
  {%- endif -%}
{%- endmacro -%}


{%- macro glx_plausibility_rule(col) -%}
  {#- the rule a VALID value of this column fails when it is implausible (see the header), or none -#}
  {%- if col.standard == 'date' -%}
    {{- return('birth_date.in_future' if col.element == 'birth_date' else col.element ~ '.after_delivery') -}}
  {%- elif col.standard == 'id_number' -%}
    {{- return('birth_date.in_future') -}}
  {%- elif col.standard in ('name', 'text', 'address') -%}
    {{- return('text.control_character') -}}
  {%- endif -%}
  {{- return(none) -}}
{%- endmacro -%}


{%- macro glx_plausibility_error(col, value_expr, delivery_day, delivery_ymd) -%}
  {#- SQL: the plausibility rule the (non-NULL, valid) standardized value fails, or NULL; none when
      the column's standard has no plausibility rule. delivery_day: the delivery date as a DATE;
      delivery_ymd: the same as the string YYYYMMDD (a valid ID number's birth date is compared as
      a string, no cast per row) -#}
  {%- set rule = glx_plausibility_rule(col) -%}
  {%- if not rule -%}
    {{- return(none) -}}
  {%- elif col.standard == 'date' -%}
    {{- return("case when " ~ value_expr ~ " > " ~ delivery_day ~ " then " ~ glx_sql_string(rule) ~ " end") -}}
  {%- elif col.standard == 'id_number' -%}
    {{- return("case when " ~ glx_std('gb11643_birth_ymd', value_expr) ~ " > " ~ delivery_ymd ~ " then " ~ glx_sql_string(rule) ~ " end") -}}
  {%- else -%}
    {{- return(glx_std('std_control_character_error', value_expr)) -}}
  {%- endif -%}
{%- endmacro -%}


{%- macro glx_plausibility_detail(col, err_expr, value_expr, delivery_date) -%}
  {#- SQL: why the row failed the column's plausibility rule (NULL for any other outcome) -#}
  {%- set rule = glx_plausibility_rule(col) -%}
  {%- if not rule -%}
    cast(null as varchar)
  {%- else -%}
    case when {{ err_expr }} = {{ glx_sql_string(rule) }} then
    {%- if col.standard == 'date' %}
      {{ glx_sql_string(col.element | replace('_', ' ')) }} || ' ' || cast({{ value_expr }} as varchar)
        || ' is after the delivery date ' || {{ delivery_date }}
    {%- elif col.standard == 'id_number' %}
      'ID number gives birth date ' || cast({{ glx_std('gb11643_birth_date', value_expr) }} as varchar)
        || ', after the delivery date ' || {{ delivery_date }}
    {%- else %}
      {{ glx_std('std_control_character_detail', value_expr) }}
    {%- endif %}
    end
  {%- endif -%}
{%- endmacro -%}


{%- macro glx_std_error(col, ref_expr, txt_expr, map_code, value_expr, err_expr=none, plausibility_expr=none) -%}
  {#- The rule the value fails, or NULL. The standards macros return a NULL value for every
      invalid or empty input and a NULL error for empty input, so
        - the error macro only runs where the value is NULL (valid rows never evaluate it);
        - a required column is missing exactly when both value and error are NULL;
        - a valid (non-NULL) value is checked for plausibility (plausibility_expr), if any. -#}
  {%- set s = col.standard -%}
  {%- set rm = glx_rule_macros(s) -%}
  {%- if err_expr -%}
    {%- set e = err_expr -%}
  {%- elif rm and rm[1] -%}
    {%- set e = glx_std(rm[1], ref_expr) -%}
  {%- elif s in ('gender', 'ethnicity', 'code', 'marital_status') -%}
    {%- set e = "case when " ~ glx_is_empty(txt_expr) ~ " then null when " ~ map_code ~ " is null then 'code.unmapped' end" -%}
  {%- else -%}
    {%- set e = none -%}
  {%- endif -%}
  {%- set ok = plausibility_expr or 'null' -%}
  {%- if col.required and s != 'marital_status' -%}
    case when {{ value_expr }} is not null then {{ ok }} else {{ "coalesce(" ~ e ~ ", 'required.missing')" if e else "'required.missing'" }} end
  {%- elif e -%}
    case when {{ value_expr }} is not null then {{ ok }} else {{ e }} end
  {%- elif plausibility_expr -%}
    case when {{ value_expr }} is not null then {{ ok }} end
  {%- else -%}
    cast(null as varchar)
  {%- endif -%}
{%- endmacro -%}


{% macro govlake_check(dept, dataset) %}
  {%- set value_maps = ref('code_value_map') -%}
  {%- if not execute -%}
    {#- parse time: dependencies are recorded by the calls above -#}
    {%- do glx_raw_relation(dept, dataset, []) -%}
    select 1 as _parse_placeholder
  {%- else -%}
  {%- set ds = glx_dataset(dept, dataset) -%}
  {%- set cols = ds.columns -%}
  {%- set names = cols | map(attribute='name') | list -%}
  {%- set elements = cols | map(attribute='element') | list -%}
  {%- set raw = glx_pending_raw_relation(dept, dataset, names) -%}
  {%- set mapped_standards = ('gender', 'ethnicity', 'code', 'marital_status') %}
  {#- Excel-touched feed (format xlsx or meta excel_touched): codes that lost their leading zeros
      still map, and an ID number Excel truncated to ...000 is told apart (glx_excel_truncated_ids) -#}
  {%- set excel = glx_excel_touched(ds) -%}
  {%- set trunc_ids = glx_excel_truncated_ids(ds) -%}
  {%- set trunc_els = trunc_ids | map(attribute='element') | list %}
with raw as not materialized (
    -- NOT MATERIALIZED: read twice from Parquet rather than held in memory (at 10 M rows DuckDB
    -- would materialize it under the memory limit and spill: 2x the CPU of the whole dedup)
    select * from {{ raw }}
),

hashed as not materialized (
    select raw.*, hash(
        {%- for n in names %}{{ adapter.quote(n) }}{% if not loop.last %}, {% endif %}{% endfor -%}
    ) as _row_hash
    from raw
),

copy_groups as (
    -- exact copies within one delivered file share a hash; the exact comparison (window over all
    -- delivered columns) runs only on rows whose hash occurs twice, not on every row
    select _batch_id, _source_file, _row_hash
    from hashed
    group by all
    having count(*) > 1
),

copies as (
    select
        _batch_id, _source_file, _row_number,
        row_number() over copies as _copy_number,
        first_value(_row_number) over copies as _first_row_number
    from hashed
    semi join copy_groups using (_batch_id, _source_file, _row_hash)
    window copies as (
        partition by _batch_id, _source_file
            {%- for n in names %}, {{ adapter.quote(n) }}{% endfor %}
        order by _row_number
    )
),

numbered as (
    -- exact copies within one delivered file: the first stays, later ones are row.duplicate
    select
        h.* exclude (_row_hash),
        coalesce(c._copy_number, 1) as _copy_number,
        coalesce(c._first_row_number, h._row_number) as _first_row_number
        {%- for c in cols if c.standard in mapped_standards %},
        {{ glx_std('std_text', 'h.' ~ adapter.quote(c.name)) }} as {{ adapter.quote('_txt_' ~ c.element) }}
        {%- endfor %}
        {%- for c in cols if c.standard == 'id_number' %},
        {{ glx_std('gb11643_normalized', 'h.' ~ adapter.quote(c.name)) }} as {{ adapter.quote('_ids_' ~ c.element) }}
        {%- endfor %}
    from hashed as h
    left join copies as c using (_batch_id, _source_file, _row_number)
),

id_bodies as (
    -- GB 11643 in steps, each computed once as a column (gb11643.sql)
    select *
        {%- for c in cols if c.standard == 'id_number' %},
        {{ glx_std('gb11643_body', adapter.quote('_ids_' ~ c.element)) }} as {{ adapter.quote('_idb_' ~ c.element) }}
        {%- endfor %}
    from numbered
),

id_checks as (
    select *
        {%- for c in cols if c.standard == 'id_number' %},
        {{ glx_std('gb11643_check_char', 'cast(' ~ adapter.quote('_idb_' ~ c.element) ~ ' as bigint)') }} as {{ adapter.quote('_idc_' ~ c.element) }}
        {%- endfor %}
    from id_bodies
),

{% for c in cols if c.standard in mapped_standards -%}
map_{{ c.element }} as (
    {%- if excel %}
    with exact as (
    {%- endif %}
    select {{ glx_map_key('source_value') }} as map_key, code
    from {{ value_maps }}
    where map_name = {{ glx_sql_string(glx_default_value_map(c)) }}
    qualify row_number() over (partition by {{ glx_map_key('source_value') }} order by code) = 1
    {%- if excel %}
    )
    -- Excel turned a code typed as a number into one without its leading zeros ('01' -> '1'):
    -- the map also answers for the stripped form, unless that is a key of its own
    select map_key, code from exact
    union all
    select ltrim(map_key, '0'), min(code) from exact
    where regexp_full_match(map_key, '0+[0-9]+') and ltrim(map_key, '0') not in (select map_key from exact)
    group by 1
    {%- endif %}
),

{% endfor -%}

valued as (
    -- each standardized value computed once
    select
        n._batch_id, n._source_file, n._source_sha256, n._row_number, n._delivery_date,
        try_cast(n._delivery_date as date) as _delivery_day,
        strftime(try_cast(n._delivery_date as date), '%Y%m%d') as _delivery_ymd,
        n._copy_number, n._first_row_number
        {%- for c in cols %}
        {%- set r = 'n.' ~ adapter.quote(c.name) %}
        {%- set t = 'n.' ~ adapter.quote('_txt_' ~ c.element) if c.standard in mapped_standards else 'null' %}
        {%- set mc = 'map_' ~ c.element ~ '.code' if c.standard in mapped_standards else 'null' %},
        {{ r }} as {{ adapter.quote('_raw_' ~ c.element) }},
        {%- if c.standard in mapped_standards %}
        {{ t }} as {{ adapter.quote('_txt_' ~ c.element) }},
        {{ mc }} as {{ adapter.quote('_map_' ~ c.element) }},
        {%- endif %}
        {%- if c.standard == 'id_number' %}
        {%- set idp = glx_id_parts('n.', c.element) %}
        {{ idp[0] }} as {{ adapter.quote('_ids_' ~ c.element) }},
        {{ idp[1] }} as {{ adapter.quote('_idb_' ~ c.element) }},
        {{ idp[2] }} as {{ adapter.quote('_idc_' ~ c.element) }},
        {{ glx_std('gb11643_value_from', *idp) }} as {{ adapter.quote('_val_' ~ c.element) }}
        {%- else %}
        {{ glx_std_value(c, r, t, mc) }} as {{ adapter.quote('_val_' ~ c.element) }}
        {%- endif %}
        {%- endfor %}
    from id_checks as n
    {%- for c in cols if c.standard in mapped_standards %}
    left join map_{{ c.element }}
        on map_{{ c.element }}.map_key = lower(n.{{ adapter.quote('_txt_' ~ c.element) }})
    {%- endfor %}
),

standardized as (
    -- the rule each value fails (NULL when it passes), and the data-element names
    select
        _batch_id, _source_file, _source_sha256, _row_number, _delivery_date,
        _copy_number, _first_row_number
        {%- for c in cols %}
        {%- set r = adapter.quote('_raw_' ~ c.element) %}
        {%- set t = adapter.quote('_txt_' ~ c.element) if c.standard in mapped_standards else 'null' %}
        {%- set v = adapter.quote('_val_' ~ c.element) %}
        {%- set mc = adapter.quote('_map_' ~ c.element) if c.standard in mapped_standards else 'null' %},
        {{ r }},
        {{ v }} as {{ adapter.quote(c.element) }},
        {%- set idp = glx_id_parts('', c.element) if c.standard == 'id_number' else none %}
        {{ glx_std_error(c, r, t, mc, v, glx_std('gb11643_error_from', *idp) if idp else none,
                         glx_plausibility_error(c, v, '_delivery_day', '_delivery_ymd')) }} as {{ adapter.quote('_err_' ~ c.element) }}
        {%- endfor %}
    from valued
),

{%- if trunc_ids %}
registry as (
    -- the people the household registry knows (its valid rows, every batch)
    select distinct id_number as reg_id from {{ ref(glx_person_registry_model()) }} where len(_errors) = 0
),

registry_prefix as (
    select substr(reg_id, 1, 15) as p15, string_agg(reg_id, ',' order by reg_id) as candidates
    from registry
    group by 1
),

{% endif -%}
record_checks as (
    -- record-level cross-checks, where the record has the elements and both values are valid
    select
        s.*
        {%- for c in trunc_ids %},
        -- an 18-digit ID typed as a number keeps 15 significant digits: ...000. A valid one that the
        -- registry does not know but whose first 15 digits a registered person has is not a new person
        case when s.{{ adapter.quote(c.element) }} like '%000' and {{ 'rg_' ~ c.element }}.reg_id is null
                  and {{ 'rp_' ~ c.element }}.candidates is not null
             then 'id_number.excel_truncated' end as {{ adapter.quote('_err_trunc_' ~ c.element) }},
        {{ 'rp_' ~ c.element }}.candidates as {{ adapter.quote('_cand_' ~ c.element) }}
        {%- endfor %}
        {%- if 'id_number' in elements and 'birth_date' in elements %},
        case when _err_id_number is null and _err_birth_date is null
                  and {{ glx_std('gb11643_birth_date', 'id_number') }} <> birth_date
             then 'id_number.birth_mismatch' end as _err_birth_mismatch
        {%- endif %}
        {%- if 'id_number' in elements and 'gender_code' in elements %},
        case when _err_id_number is null and _err_gender_code is null
                  and {{ glx_std('gb11643_gender_code', 'id_number') }} <> gender_code
             then 'id_number.gender_mismatch' end as _err_gender_mismatch
        {%- endif %}
    from standardized as s
    {%- for c in trunc_ids %}
    left join registry as {{ 'rg_' ~ c.element }}
        on {{ 'rg_' ~ c.element }}.reg_id = s.{{ adapter.quote(c.element) }} and s.{{ adapter.quote(c.element) }} like '%000'
    left join registry_prefix as {{ 'rp_' ~ c.element }}
        on {{ 'rp_' ~ c.element }}.p15 = substr(s.{{ adapter.quote(c.element) }}, 1, 15) and s.{{ adapter.quote(c.element) }} like '%000'
    {%- endfor %}
),

checked as (
    select
        _batch_id, _source_file, _source_sha256, _row_number, _delivery_date,
        {%- for c in cols %}
        {{ adapter.quote(c.element) }},
        {%- endfor %}
        case
            -- the common case first: no rule failed (one cheap test, no list built)
            when _copy_number = 1
            {%- for c in cols %} and {{ adapter.quote('_err_' ~ c.element) }} is null{% endfor %}
            {%- if 'id_number' in elements and 'birth_date' in elements %} and _err_birth_mismatch is null{% endif %}
            {%- if 'id_number' in elements and 'gender_code' in elements %} and _err_gender_mismatch is null{% endif %}
            {%- for e in trunc_els %} and {{ adapter.quote('_err_trunc_' ~ e) }} is null{% endfor %}
            then []
            else list_filter([
            {%- for c in cols %}
                {'rule': {{ adapter.quote('_err_' ~ c.element) }}, 'col': {{ glx_sql_string(c.name) }},
                 'val': {{ adapter.quote('_raw_' ~ c.element) }},
                 'detail': {{ glx_plausibility_detail(c, adapter.quote('_err_' ~ c.element), adapter.quote(c.element), '_delivery_date') }}},
            {%- endfor %}
            {%- if 'id_number' in elements and 'birth_date' in elements %}
                {'rule': _err_birth_mismatch,
                 'col': {{ glx_sql_string(cols[elements.index('birth_date')].name) }}, 'val': _raw_birth_date,
                 'detail': 'ID number ' || coalesce(id_number, '') || ' gives birth date '
                           || coalesce(cast({{ glx_std('gb11643_birth_date', 'id_number') }} as varchar), '')},
            {%- endif %}
            {%- if 'id_number' in elements and 'gender_code' in elements %}
                {'rule': _err_gender_mismatch,
                 'col': {{ glx_sql_string(cols[elements.index('gender_code')].name) }}, 'val': _raw_gender_code,
                 'detail': 'ID number ' || coalesce(id_number, '') || ' gives gender code '
                           || coalesce({{ glx_std('gb11643_gender_code', 'id_number') }}, '')},
            {%- endif %}
            {%- for c in trunc_ids %}
                {'rule': {{ adapter.quote('_err_trunc_' ~ c.element) }}, 'col': {{ glx_sql_string(c.name) }},
                 'val': {{ adapter.quote('_raw_' ~ c.element) }},
                 'detail': 'ID number ' || {{ adapter.quote(c.element) }} || ' ends in 000 (an 18-digit number typed into Excel keeps 15 significant digits) and is not in the household registry; registered with the same first 15 digits: '
                           || coalesce({{ adapter.quote('_cand_' ~ c.element) }}, '')},
            {%- endfor %}
                {'rule': case when _copy_number > 1 then 'row.duplicate' end,
                 'col': cast(null as varchar), 'val': cast(null as varchar),
                 'detail': 'exact copy of row ' || _first_row_number || ' of the same file'}
            ], lambda e: e.rule is not null)
        end as _errors
    from record_checks
)

select * from checked
  {%- endif -%}
{% endmacro %}


{% macro govlake_stage(dept, dataset) %}
  {#- the valid rows of the feed's batches that have not passed the standardized gate yet (on a
      first build: every batch): data elements + lineage (_batch_id, _source_file, _row_number
      locate each row in its delivery). A view (dbt_project.yml): the gate validates these rows
      in the lake's DuckDB file where chk_ holds them, so the standardized rows are not written
      a second time (issue 16); once the gate records the batches as gated the view is empty.
      The shared models and the resources read chk_ directly. -#}
  {%- set chk = ref(glx_chk_name(dept, dataset)) -%}
  {%- if not execute -%}
    select 1 as _parse_placeholder
  {%- else -%}
  {%- set ds = glx_dataset(dept, dataset) %}
select
    {%- for c in ds.columns %}
    {{ adapter.quote(c.element) }},
    {%- endfor %}
    _batch_id,
    _source_file,
    _source_sha256,
    _row_number,
    _delivery_date
from {{ chk }}
where len(_errors) = 0
  and {{ glx_ungated(dept, dataset) }}
  {%- endif -%}
{% endmacro %}


{#- The person registry an Excel-truncated ID is compared with (its chk_ model). -#}
{% macro glx_person_registry_model() -%}
  {{- return('chk_public_security__household_registration') -}}
{%- endmacro %}

{% macro glx_excel_touched(ds) -%}
  {{- return(ds.meta.get('format') == 'xlsx' or ds.meta.get('excel_touched') in (true, 'true', 'yes', 1)) -}}
{%- endmacro %}

{#- The id_number columns checked for Excel truncation: those of an Excel-touched feed other than
    the registry itself. The model depends on the registry (govlake scaffold writes a
    `-- depends_on: {{ ref(...) }}` line into such a chk_ model). -#}
{% macro glx_excel_truncated_ids(ds) -%}
  {%- set out = [] -%}
  {%- if glx_excel_touched(ds) and glx_chk_name(ds.dept, ds.dataset) != glx_person_registry_model() -%}
    {%- for c in ds.columns if c.standard == 'id_number' -%}{%- do out.append(c) -%}{%- endfor -%}
  {%- endif -%}
  {{- return(out) -}}
{%- endmacro %}
