{#- Per-source code maps (docs/standards.md §4: "Mapping must be per source system, never global").

    std_code(expr, map_name, empty_code=none)  -> the standard code for the value in seed
        code_value_map (map_name), NULL if unmapped; NULL/empty input -> empty_code (default:
        '90' for marital_status_* maps, i.e. 未说明的婚姻状况, else NULL)
    std_code_error(expr, map_name)             -> 'code.unmapped' for a non-empty value not in
        the map, else NULL

    Look-up key: lower(std_text(x)) = lower(source_value) (trimmed, zero-width stripped,
    case-insensitive) - the same key a join on code_value_map uses. The map is read from the
    seed at compile time (run_query, so the seed must be loaded first: ref() makes dbt build it
    before the model) and inlined as a DuckDB MAP literal, so no join is needed.
-#}

{% macro _std_code_map(map_name) -%}
{%- set rel = ref('code_value_map') -%}
{%- if not execute -%}
{{ return(none) }}
{%- endif -%}
{%- set q -%}
select lower(source_value) as k, min(code) as c from {{ rel }}
where map_name = '{{ map_name | replace("'", "''") }}' group by 1 order by 1
{%- endset -%}
{%- set rows = run_query(q).rows -%}
{%- if rows | length == 0 -%}
{{ exceptions.raise_compiler_error("std_code: value map '" ~ map_name ~ "' has no rows in seed code_value_map") }}
{%- endif -%}
{%- set items = [] -%}
{%- for r in rows -%}
{%- do items.append("'" ~ (r[0] | replace("'", "''")) ~ "': '" ~ (r[1] | replace("'", "''")) ~ "'") -%}
{%- endfor -%}
{{ return('MAP {' ~ (items | join(', ')) ~ '}') }}
{%- endmacro %}

{% macro _std_code_default_empty(map_name, empty_code) -%}
{%- if empty_code is not none -%}'{{ empty_code }}'
{%- elif map_name.startswith('marital_status') -%}'90'
{%- else -%}cast(null as varchar)
{%- endif -%}
{%- endmacro %}

{#- §4 per-source map: standard code for the value, empty -> empty_code, unmapped -> NULL. -#}
{% macro std_code(expr, map_name, empty_code=none) -%}
{%- set m = _std_code_map(map_name) -%}
{%- if m is none -%}cast(null as varchar){%- else -%}
list_transform([lower({{ std_text(expr) }})], lambda _gl_cd_k:
  case when _gl_cd_k is null then {{ _std_code_default_empty(map_name, empty_code) }} else {{ m }}[_gl_cd_k] end
)[1]
{%- endif -%}
{%- endmacro %}

{#- §4 per-source map: 'code.unmapped' for a non-empty value that is not in the map. -#}
{% macro std_code_error(expr, map_name) -%}
{%- set m = _std_code_map(map_name) -%}
{%- if m is none -%}cast(null as varchar){%- else -%}
list_transform([lower({{ std_text(expr) }})], lambda _gl_cd_k:
  case when _gl_cd_k is not null and {{ m }}[_gl_cd_k] is null then 'code.unmapped' end
)[1]
{%- endif -%}
{%- endmacro %}
