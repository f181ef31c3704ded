{#- Mobile numbers (docs/standards.md §5).

    std_phone(expr)        -> the 11-digit mobile number, or NULL if invalid
    std_phone_error(expr)  -> 'phone.format' when not NULL/empty and not a mobile number, else NULL

    After NFKC (full-width -> half-width) and trim: strip spaces, '-', brackets ( ) [ ], then a
    leading +86 / 0086 / 86, then the loose check ^1[3-9]\d{9}$ (the strict 2020 number-block
    regex of §5 is not applied: blocks change, and §5 says not to infer the carrier).
-#}

{% macro _std_phone_digits(expr) -%}
nullif(regexp_extract(regexp_replace({{ govlake_clean(expr) }}, '[ ()\[\]-]', '', 'g'), '^(?:\+86|0086|86)?(1[3-9][0-9]{9})$', 1), '')
{%- endmacro %}

{#- docs/standards.md §5: 11-digit mobile number, NULL when empty or invalid. -#}
{% macro std_phone(expr) -%}
{{ _std_phone_digits(expr) }}
{%- endmacro %}

{#- docs/standards.md §5: 'phone.format' for a non-empty value that is not a mobile number. -#}
{% macro std_phone_error(expr) -%}
case when {{ govlake_clean(expr) }} is not null and {{ _std_phone_digits(expr) }} is null then 'phone.format' end
{%- endmacro %}
