{#- GB/T 2260 administrative division codes (docs/standards.md §3).

    std_division_code(expr)        -> the 6-digit code, or NULL if invalid
    std_division_code_error(expr)  -> 'division_code.invalid' when not NULL/empty and not 6 digits
                                      or the 2-digit province prefix is not one of the 34, else NULL
    A code is NOT rejected only because it is missing from the current list (§1 pitfalls, §3):
    codes change; the versioned seed code_division (code, name, valid_from, valid_to) is for
    look-ups and reports, not for rejection.
-#}

{#- The 34 province-level prefixes of GB/T 2260 (docs/standards.md §3). 91 "国外" is not one. -#}
{% macro gbt2260_province_prefixes() -%}
('11','12','13','14','15','21','22','23','31','32','33','34','35','36','37','41','42','43','44','45','46','50','51','52','53','54','61','62','63','64','65','71','81','82')
{%- endmacro %}

{% macro _std_division_code_eval(expr) -%}
list_transform([{{ govlake_clean(expr) }}], lambda _gl_dv_s:
  case when regexp_full_match(_gl_dv_s, '[0-9]{6}') and substr(_gl_dv_s, 1, 2) in {{ gbt2260_province_prefixes() }}
       then _gl_dv_s end
)[1]
{%- endmacro %}

{#- GB/T 2260 §3: 6-digit division code, NULL when empty or invalid. -#}
{% macro std_division_code(expr) -%}
{{ _std_division_code_eval(expr) }}
{%- endmacro %}

{#- GB/T 2260 §3: 'division_code.invalid' for a non-empty value that is not a valid code. -#}
{% macro std_division_code_error(expr) -%}
case when {{ govlake_clean(expr) }} is not null and {{ _std_division_code_eval(expr) }} is null then 'division_code.invalid' end
{%- endmacro %}
