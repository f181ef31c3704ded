{#- GB 11643-1999 公民身份号码 (standards.md §1).

    gb11643_id_number(expr)        -> the standard 18-character ID number, or NULL if invalid
    gb11643_id_number_error(expr)  -> NULL if valid, else the first failing rule, in the order
                                      of standards.md §1 "Validation order":
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

{#- The 2-digit prefixes an ID number may start with: standards.md §3 plus 83 (Taiwan residence permits). -#}
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

{#- One pass over a value: a struct {std, err}. Bound values: _gl_id_s = the normalised string,
    _gl_id_b = its 17-character body (15-digit form already upgraded with '19'),
    _gl_id_c = the check character computed over the body. -#}
{% macro _gb11643_eval(expr) -%}
list_transform([nullif(upper(replace({{ govlake_halfwidth('cast(' ~ expr ~ ' as varchar)') }}, ' ', '')), '')], lambda _gl_id_s:
  list_transform([case
      when regexp_full_match(_gl_id_s, '[0-9]{15}') then substr(_gl_id_s, 1, 6) || '19' || substr(_gl_id_s, 7, 9)
      when regexp_full_match(_gl_id_s, '[0-9]{17}[0-9X]') then substr(_gl_id_s, 1, 17)
    end], lambda _gl_id_b:
    list_transform([{{ gb11643_check_char('cast(_gl_id_b as bigint)') }}], lambda _gl_id_c:
      list_transform([case
          when _gl_id_s is null then null
          when _gl_id_b is null then 'id_number.format'
          when length(_gl_id_s) = 15 and substr(_gl_id_s, 13, 3) >= '996' then 'id_number.legacy_centenarian'
          when substr(_gl_id_b, 7, 1) = '0' or coalesce(try_cast(substr(_gl_id_b, 7, 4) || '-' || substr(_gl_id_b, 11, 2) || '-' || substr(_gl_id_b, 13, 2) as date) > current_date, true)
            then 'id_number.birth_date'
          when substr(_gl_id_b, 1, 2) not in {{ gb11643_province_prefixes() }} then 'id_number.province'
          when length(_gl_id_s) = 18 and substr(_gl_id_s, 18, 1) <> _gl_id_c then 'id_number.check_digit'
        end], lambda _gl_id_e:
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

{#- GB 11643 §1 "Extraction": gender = 1 if int(s[16]) odd else 2 (GB/T 2261.1 codes). -#}
{% macro gb11643_gender_code(std_id_expr) -%}
case when regexp_full_match(substr({{ std_id_expr }}, 17, 1), '[0-9]') then case when cast(substr({{ std_id_expr }}, 17, 1) as integer) % 2 = 1 then '1' else '2' end end
{%- endmacro %}

{#- GB 11643 §1 in one pass: struct {std, err}. Use (x).std / (x).err from one column when both
    are needed at scale: the two macros above each evaluate the whole rule set. -#}
{% macro gb11643_id_number_checked(expr) -%}
{{ _gb11643_eval(expr) }}
{%- endmacro %}
