{#- GB 11643-1999 公民身份号码 (docs/standards.md §1).

    gb11643_id_number(expr)        -> the standard 18-character ID number, or NULL if invalid
    gb11643_id_number_error(expr)  -> NULL if valid, else the first failing rule, in the order
                                      of docs/standards.md §1 "Validation order":
        id_number.format              not 15 digits and not ^\d{17}[\dX]$ (e.g. 1.10105E+17)
        id_number.legacy_centenarian  15-digit with sequence 996-999: flagged, not upgraded ([?] rule)
        id_number.birth_date          YYYYMMDD is not a real date (year >= 1000), or is after today
        id_number.province            2-digit prefix not one of the 34 GB/T 2260 provinces or 83
                                      (residence permits 81/82/83; 91 "国外" is not accepted)
        id_number.check_digit         ISO 7064 MOD 11-2 check character differs
    gb11643_birth_date(std_id)     -> DATE from positions 7-14 of a standard 18-character number
    gb11643_gender_code(std_id)    -> GB/T 2261.1 code: '1' (odd sequence) / '2' (even)

    Normalisation (§1 step 1 and §8): NFKC for these characters (full-width -> half-width, see
    _normalize.sql), trim, remove inner spaces, x -> X. NULL or empty -> value NULL, error NULL.
    15-digit (GB 11643-1989) numbers are upgraded: s[:6] + '19' + s[6:] + check character.
-#}

{#- The 2-digit prefixes an ID number may start with: docs/standards.md §3 plus 83 (Taiwan residence permits). -#}
{% macro gb11643_province_prefixes() -%}
('11','12','13','14','15','21','22','23','31','32','33','34','35','36','37','41','42','43','44','45','46','50','51','52','53','54','61','62','63','64','65','71','81','82','83')
{%- endmacro %}

{#- MOD 11-2 check character of a 17-digit BIGINT `n`: C = "10X98765432"[sum(a_k * W_k) mod 11],
    W = 2^(17-k) mod 11 = 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2. Digits are taken arithmetically
    (n // 10^p % 10), which is several times faster than 17 substrings. -#}
{% macro gb11643_check_char(n) -%}
{%- set w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2] -%}
substr('10X98765432', cast((
{%- for k in range(17) -%}
(({{ n }} // {{ 10 ** (16 - k) }}) % 10) * {{ w[k] }}{% if not loop.last %} + {% endif %}
{%- endfor -%}
) % 11 as integer) + 1, 1)
{%- endmacro %}

{#- The evaluation in steps, each a flat expression over the previous step's value, so a model can
    compute each step once as a column (govlake_check does: nested lambdas that bind values cost
    about 2.5x more CPU than the same steps as columns, docs/performance.md):
      s = gb11643_normalized(expr)   the normalised string (NULL when empty)
      b = gb11643_body(s)            its 17-character body (15-digit form upgraded with '19'), NULL
                                     when the format is wrong
      c = gb11643_check_char(cast(b as bigint))
      gb11643_error_from(s, b, c) / gb11643_value_from(s, b, c)
    The arguments are referenced several times: pass column references or cheap expressions. -#}
{% macro gb11643_normalized(expr) -%}
nullif(upper(replace({{ govlake_halfwidth('cast(' ~ expr ~ ' as varchar)') }}, ' ', '')), '')
{%- endmacro %}

{% macro gb11643_body(s) -%}
case
  when regexp_full_match({{ s }}, '[0-9]{15}') then substr({{ s }}, 1, 6) || '19' || substr({{ s }}, 7, 9)
  when regexp_full_match({{ s }}, '[0-9]{17}[0-9X]') then substr({{ s }}, 1, 17)
end
{%- endmacro %}

{% macro gb11643_error_from(s, b, c) -%}
case
  when {{ s }} is null then null
  when {{ b }} is null then 'id_number.format'
  when length({{ s }}) = 15 and substr({{ s }}, 13, 3) >= '996' then 'id_number.legacy_centenarian'
  when substr({{ b }}, 7, 1) = '0' or coalesce(try_cast(substr({{ b }}, 7, 4) || '-' || substr({{ b }}, 11, 2) || '-' || substr({{ b }}, 13, 2) as date) > current_date, true)
    then 'id_number.birth_date'
  when substr({{ b }}, 1, 2) not in {{ gb11643_province_prefixes() }} then 'id_number.province'
  when length({{ s }}) = 18 and substr({{ s }}, 18, 1) <> {{ c }} then 'id_number.check_digit'
end
{%- endmacro %}

{% macro gb11643_value_from(s, b, c) -%}
case when {{ s }} is not null and ({{ gb11643_error_from(s, b, c) }}) is null then {{ b }} || {{ c }} end
{%- endmacro %}

{#- One pass over any expression: a struct {std, err}; the steps above bound with lambdas. -#}
{% macro _gb11643_eval(expr) -%}
list_transform([{{ gb11643_normalized(expr) }}], lambda _gl_id_s:
  list_transform([{{ gb11643_body('_gl_id_s') }}], lambda _gl_id_b:
    list_transform([{{ gb11643_check_char('cast(_gl_id_b as bigint)') }}], lambda _gl_id_c:
      list_transform([{{ gb11643_error_from('_gl_id_s', '_gl_id_b', '_gl_id_c') }}], lambda _gl_id_e:
        {'std': case when _gl_id_s is not null and _gl_id_e is null then _gl_id_b || _gl_id_c end, 'err': _gl_id_e}
      )[1]
    )[1]
  )[1]
)[1]
{%- endmacro %}

{#- GB 11643 §1: standard 18-character ID number (15-digit upgraded), NULL when invalid. -#}
{% macro gb11643_id_number(expr) -%}
({{ _gb11643_eval(expr) }}).std
{%- endmacro %}

{#- GB 11643 §1: first failing rule (id_number.*), NULL when valid or empty. -#}
{% macro gb11643_id_number_error(expr) -%}
({{ _gb11643_eval(expr) }}).err
{%- endmacro %}

{#- GB 11643 §1 "Extraction": birth = s[6:14] of a standard 18-character number. -#}
{% macro gb11643_birth_date(std_id_expr) -%}
try_cast(substr({{ std_id_expr }}, 7, 4) || '-' || substr({{ std_id_expr }}, 11, 2) || '-' || substr({{ std_id_expr }}, 13, 2) as date)
{%- endmacro %}

{#- The birth date of a standard 18-character number as the string YYYYMMDD (positions 7-14): to
    compare with another YYYYMMDD string without a cast per row (6x cheaper than gb11643_birth_date). -#}
{% macro gb11643_birth_ymd(std_id_expr) -%}
substr({{ std_id_expr }}, 7, 8)
{%- endmacro %}

{#- GB 11643 §1 "Extraction": gender = 1 if int(s[16]) odd else 2 (GB/T 2261.1 codes). -#}
{% macro gb11643_gender_code(std_id_expr) -%}
case when regexp_full_match(substr({{ std_id_expr }}, 17, 1), '[0-9]') then case when cast(substr({{ std_id_expr }}, 17, 1) as integer) % 2 = 1 then '1' else '2' end end
{%- endmacro %}

{#- GB 11643 §1 in one pass: struct {std, err}. Use (x).std / (x).err from one column when both
    are needed at scale: the two macros above each evaluate the whole rule set. -#}
{% macro gb11643_id_number_checked(expr) -%}
{{ _gb11643_eval(expr) }}
{%- endmacro %}
