{#- Year-month, decimal, name and free text (docs/standards.md §4, §8; docs/sources.md feeds 3 and 5). -#}

{#- Year-month (docs/sources.md §3 aae030 'YYYYMM'): -> 'YYYY-MM'. Also accepts YYYY-MM, YYYY/M,
    YYYY.M, YYYY年M月 after NFKC and trim. Month 01-12, year >= 1000. -#}
{% macro _std_year_month_eval(expr) -%}
list_transform([regexp_extract({{ govlake_clean(expr) }},
    '^([1-9][0-9]{3})(?:([0-9]{2})|[-/.]([0-9]{1,2})|年([0-9]{1,2})月)$', ['y', 'm1', 'm2', 'm3'])], lambda _gl_ym_m:
  case when _gl_ym_m.y <> '' and cast(_gl_ym_m.m1 || _gl_ym_m.m2 || _gl_ym_m.m3 as integer) between 1 and 12
       then _gl_ym_m.y || '-' || lpad(_gl_ym_m.m1 || _gl_ym_m.m2 || _gl_ym_m.m3, 2, '0') end
)[1]
{%- endmacro %}

{#- 'YYYYMM' -> 'YYYY-MM', NULL when empty or invalid. -#}
{% macro std_year_month(expr) -%}
{{ _std_year_month_eval(expr) }}
{%- endmacro %}

{#- 'year_month.invalid' for a non-empty value that is not a year-month. -#}
{% macro std_year_month_error(expr) -%}
case when {{ govlake_clean(expr) }} is not null and {{ _std_year_month_eval(expr) }} is null then 'year_month.invalid' end
{%- endmacro %}

{#- Decimal numbers (e.g. 注册资本(万元)): -> DECIMAL(18,4). After NFKC and trim accepts
    [+-]digits[.digits] and thousands separators in groups of three (1,234.5). More than 4
    decimals are rounded half away from zero (DuckDB cast); more than 14 integer digits,
    exponents, NaN/inf and anything else -> decimal.invalid. -#}
{% macro _std_decimal_eval(expr) -%}
list_transform([{{ govlake_clean(expr) }}], lambda _gl_dc_s:
  case
    when regexp_full_match(_gl_dc_s, '[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)') then try_cast(_gl_dc_s as decimal(18, 4))
    when regexp_full_match(_gl_dc_s, '[+-]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?') then try_cast(replace(_gl_dc_s, ',', '') as decimal(18, 4))
  end
)[1]
{%- endmacro %}

{#- Number -> DECIMAL(18,4), NULL when empty or invalid. -#}
{% macro std_decimal(expr) -%}
{{ _std_decimal_eval(expr) }}
{%- endmacro %}

{#- 'decimal.invalid' for a non-empty value that is not a number fitting DECIMAL(18,4). -#}
{% macro std_decimal_error(expr) -%}
case when {{ govlake_clean(expr) }} is not null and {{ _std_decimal_eval(expr) }} is null then 'decimal.invalid' end
{%- endmacro %}

{#- Zero-width characters U+200B-U+200D and U+FEFF are deleted (§8: NFKC does not remove them);
    then spaces, tab, CR, LF, U+3000 and NBSP are trimmed at both ends; '' -> NULL.
    Both steps run only on values that need them (one RE2 check each), translate()/trim(chars)
    being slow. -#}
{% macro _govlake_text_edges(y) -%}
{%- set edge = [' ', 'chr(9)', 'chr(10)', 'chr(13)', 'chr(12288)', 'chr(160)'] -%}
nullif(case when {% for ch in edge %}{{ 'prefix(' ~ y ~ ', ' ~ ("' '" if ch == ' ' else ch) ~ ') or suffix(' ~ y ~ ', ' ~ ("' '" if ch == ' ' else ch) ~ ')' }}{% if not loop.last %} or {% endif %}{% endfor %}
            then trim({{ y }}, ' ' || chr(9) || chr(10) || chr(13) || chr(12288) || chr(160))
            else {{ y }} end, '')
{%- endmacro %}

{#- Flat expression (no lambda binding: the argument is referenced several times, pass a column or a
    cheap expression). The zero-width/dot translate() and the trim run only on values that need them
    (one RE2 scan; prefix()/suffix() tests of the six trimmed characters are O(1)). -#}
{% macro _govlake_text(expr, dots) -%}
{%- set dot_from = '•‧・･∙⋅⸱' if dots else '' -%}
{%- set dot_to = '·······' if dots else '' -%}
{%- set x = 'cast(' ~ expr ~ ' as varchar)' -%}
case when regexp_matches({{ x }}, '[{{ dot_from }}\x{200B}-\x{200D}\x{FEFF}]')
     then {{ _govlake_text_edges("translate(" ~ x ~ ", '" ~ dot_from ~ "' || chr(8203) || chr(8204) || chr(8205) || chr(65279), '" ~ dot_to ~ "')") }}
     else {{ _govlake_text_edges(x) }} end
{%- endmacro %}

{#- Names (§8): only the narrow mapping, no NFKC. Middle-dot variants · • ‧ ・ ･ (and the look-alikes
    ∙ U+2219, ⋅ U+22C5, ⸱ U+2E31) -> U+00B7 (阿卜杜拉·艾山); zero-width stripped; trimmed; '' -> NULL. -#}
{% macro std_name(expr) -%}
{{ _govlake_text(expr, true) }}
{%- endmacro %}

{#- Free text / addresses (§8): zero-width stripped, trimmed, '' -> NULL. -#}
{% macro std_text(expr) -%}
{{ _govlake_text(expr, false) }}
{%- endmacro %}

{#- Control characters (govlake rule, not in docs/standards.md: no standard value holds one). The C0
    controls U+0000-U+001F (NUL, tab, CR, LF, ...), DEL U+007F and the C1 controls U+0080-U+009F.
    Applied to the STANDARDIZED value, so the whitespace handling the standards already do is not a
    failure (tab/CR/LF trimmed at both ends of a name or text, mapped to spaces in code-like
    fields); a control character left inside a value is. A value holding one is not repaired
    (dropping a NUL would make another name): the row is quarantined with text.control_character. -#}
{% macro std_control_character_class() -%}
[\x00-\x1F\x7F-\x{9F}]
{%- endmacro %}

{#- 'text.control_character' when the value holds a control character, else NULL (also for NULL). -#}
{% macro std_control_character_error(expr) -%}
case when regexp_matches({{ expr }}, '{{ std_control_character_class() }}') then 'text.control_character' end
{%- endmacro %}

{#- Which control character and where: 'control character U+0000 at character 1', NULL when none. -#}
{% macro std_control_character_detail(expr) -%}
list_transform([regexp_extract({{ expr }}, '{{ std_control_character_class() }}')], lambda _gl_cc_c:
  case when _gl_cc_c <> '' then 'control character ' || printf('U+%04X', unicode(_gl_cc_c))
                               || ' at character ' || strpos({{ expr }}, _gl_cc_c) end
)[1]
{%- endmacro %}
