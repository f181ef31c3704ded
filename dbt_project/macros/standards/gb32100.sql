{#- GB 32100-2015 统一社会信用代码 (docs/standards.md §2).

    gb32100_uscc(expr)        -> the standard 18-character code, or NULL if invalid
    gb32100_uscc_error(expr)  -> NULL if valid, else the first failing rule:
        uscc.format      not ^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$ (I O S V Z are not used)
        uscc.check_char  position 18 differs from the MOD 31 check character:
                         C18 = CS[(31 - sum(v_k * W_k) mod 31) mod 31], W_k = 3^(k-1) mod 31,
                         CS = 0123456789ABCDEFGHJKLMNPQRTUWXY (values 0-30)
        uscc.org_code    position 17 differs from the GB 11714 check of positions 9-16:
                         weights 3 7 9 10 5 8 4 2 over 0-9A-Z (values 0-35), C = 11 - (sum mod 11),
                         10 -> X, 11 -> 0, i.e. '0X987654321'[sum mod 11]
    An unknown first character (registration authority) is allowed: §2 says warn, do not reject.
    Normalisation: NFKC for these characters (full-width -> half-width), trim, upper case.
    NULL or empty -> value NULL, error NULL.
-#}

{% macro _gb32100_eval(expr) -%}
{%- set w = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28] -%}
{%- set ow = [3, 7, 9, 10, 5, 8, 4, 2] -%}
list_transform([upper({{ govlake_clean(expr) }})], lambda _gl_us_s:
  list_transform([case
      when _gl_us_s is null then null
      when not regexp_full_match(_gl_us_s, '[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}') then 'uscc.format'
      when substr(_gl_us_s, 18, 1) <> substr('0123456789ABCDEFGHJKLMNPQRTUWXY', cast((31 - ((
        {%- for k in range(17) -%}
        (strpos('0123456789ABCDEFGHJKLMNPQRTUWXY', substr(_gl_us_s, {{ k + 1 }}, 1)) - 1) * {{ w[k] }}{% if not loop.last %} + {% endif %}
        {%- endfor -%}
        ) % 31)) % 31 as integer) + 1, 1) then 'uscc.check_char'
      when substr(_gl_us_s, 17, 1) <> substr('0X987654321', cast((
        {%- for k in range(8) -%}
        (strpos('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ', substr(_gl_us_s, {{ k + 9 }}, 1)) - 1) * {{ ow[k] }}{% if not loop.last %} + {% endif %}
        {%- endfor -%}
        ) % 11 as integer) + 1, 1) then 'uscc.org_code'
    end], lambda _gl_us_e:
    {'std': case when _gl_us_s is not null and _gl_us_e is null then _gl_us_s end, 'err': _gl_us_e}
  )[1]
)[1]
{%- endmacro %}

{#- GB 32100 §2: standard 18-character USCC, NULL when invalid. -#}
{% macro gb32100_uscc(expr) -%}
({{ _gb32100_eval(expr) }}).std
{%- endmacro %}

{#- GB 32100 §2: first failing rule (uscc.format / uscc.check_char / uscc.org_code), NULL when valid or empty. -#}
{% macro gb32100_uscc_error(expr) -%}
({{ _gb32100_eval(expr) }}).err
{%- endmacro %}

{#- GB 32100 §2 in one pass: struct {std, err} (see gb11643_id_number_checked). -#}
{% macro gb32100_uscc_checked(expr) -%}
{{ _gb32100_eval(expr) }}
{%- endmacro %}
