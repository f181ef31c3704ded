{#- Dates (docs/standards.md §4 "Dates"; docs/sources.md feeds 1-6).

    std_date(expr)        -> DATE, or NULL if the value is not a date in an accepted form
    std_date_error(expr)  -> 'date.invalid' when not NULL/empty and not a date, else NULL

    Accepted after NFKC (full-width -> half-width) and trim:
      YYYYMMDD                      20230501
      YYYY年M月D日                   2023年5月1日
      YYYY[-/.]M[-/.]D               2023-05-01, 2023/5/1, 2023.5.1 (the same separator twice)
        each optionally followed by a time [ T]HH:MM[:SS] (checked, then dropped)
      Excel serial day numbers      date(1899,12,30) + n, only for 61 <= n <= 80000 (Excel's fake
                                    1900-02-29 makes n < 61 wrong; 80000 = 2119-01-11); a trailing
                                    '.0' (a number that went through a float) is accepted
    Rejected: 2-digit years, years before 1000, impossible dates (Feb 31), invalid times.
-#}

{% macro _std_date_eval(expr) -%}
list_transform([{{ govlake_clean(expr) }}], lambda _gl_dt_s:
  case
    {# fast paths for the two most common forms, the same result as the general rule below
        (1 M household birth dates: 0.4 s -> 0.2 s); other values go to the general rule #}
    when regexp_full_match(_gl_dt_s, '[1-9][0-9]{7}')
      then try_cast(substr(_gl_dt_s, 1, 4) || '-' || substr(_gl_dt_s, 5, 2) || '-' || substr(_gl_dt_s, 7, 2) as date)
    when regexp_full_match(_gl_dt_s, '[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}')
      then try_cast(_gl_dt_s as date)
    else list_transform([regexp_extract(_gl_dt_s,
      '^([1-9][0-9]{3})(?:([-/.])([0-9]{1,2})([-/.])([0-9]{1,2})|年([0-9]{1,2})月([0-9]{1,2})日|([0-9]{2})([0-9]{2}))(?:[ T]+([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?)?$',
      ['y', 's1', 'm1', 's2', 'd1', 'm2', 'd2', 'm3', 'd3', 'hh', 'mi', 'ss'])], lambda _gl_dt_m:
    case
      when _gl_dt_s is null then null
      when regexp_full_match(_gl_dt_s, '[0-9]{1,5}(\.0+)?')
        then case when cast(split_part(_gl_dt_s, '.', 1) as integer) between 61 and 80000
                  then cast(date '1899-12-30' + cast(split_part(_gl_dt_s, '.', 1) as integer) as date) end
      when _gl_dt_m.y = '' or _gl_dt_m.s1 <> _gl_dt_m.s2 then null
      when _gl_dt_m.hh <> '' and (cast(_gl_dt_m.hh as integer) > 23 or cast(_gl_dt_m.mi as integer) > 59
                                  or cast(coalesce(nullif(_gl_dt_m.ss, ''), '0') as integer) > 59) then null
      else try_cast(_gl_dt_m.y || '-' || (_gl_dt_m.m1 || _gl_dt_m.m2 || _gl_dt_m.m3) || '-' || (_gl_dt_m.d1 || _gl_dt_m.d2 || _gl_dt_m.d3) as date)
    end
  )[1]
  end
)[1]
{%- endmacro %}

{#- docs/standards.md §4 "Dates": the value as a DATE, NULL when empty or invalid. -#}
{% macro std_date(expr) -%}
{{ _std_date_eval(expr) }}
{%- endmacro %}

{#- docs/standards.md §4 "Dates": 'date.invalid' for a non-empty value that is not an accepted date. -#}
{% macro std_date_error(expr) -%}
case when {{ govlake_clean(expr) }} is not null and {{ _std_date_eval(expr) }} is null then 'date.invalid' end
{%- endmacro %}
