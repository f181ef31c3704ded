{#- Shared building blocks for the standardization macros (docs/standards.md §8 "Full-width characters").

    DuckDB 2.0 has nfc_normalize() but no NFKC function. For the fields we standardize (codes,
    ID numbers, phones, dates, numbers) the only NFKC mappings that matter are full-width ASCII
    U+FF01-U+FF5E -> U+0021-U+007E (subtract 0xFEE0) and the compatibility spaces (U+3000,
    NBSP U+00A0, U+2000-U+200A, U+202F, U+205F) -> ' '; ASCII tab/CR/LF also become ' '. govlake_halfwidth() applies exactly
    those with translate(); translate() is slow on a long map, so it only runs on values that
    contain one of those characters (checked with one RE2 match, which is cheap).
    Every macro returns one DuckDB SQL expression; values that are used many times are bound
    once with list_transform([x], lambda v: ...)[1] because DuckDB does not eliminate common
    sub-expressions inside CASE. -#}

{% macro govlake_halfwidth(expr) -%}
case when regexp_matches({{ expr }}, '[\t\r\n\x{FF01}-\x{FF5E}\x{3000}\x{00A0}\x{2000}-\x{200A}\x{202F}\x{205F}]') then translate({{ expr }}, chr(9) || chr(10) || chr(13) || '！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～　              ', '   !"#$%&''()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~               ') else {{ expr }} end
{%- endmacro %}

{#- Bind `expr` to the lambda variable `var` and evaluate `body` once per row. -#}
{% macro govlake_bind(expr, var, body) -%}
list_transform([{{ expr }}], lambda {{ var }}: {{ body }})[1]
{%- endmacro %}

{#- Trim spaces at both ends (tab/CR/LF were mapped to spaces by govlake_halfwidth); '' -> NULL. -#}
{% macro govlake_trim(expr) -%}
nullif(trim({{ expr }}), '')
{%- endmacro %}

{#- Half-width, trimmed, empty -> NULL: the common first step for code-like fields. -#}
{% macro govlake_clean(expr) -%}
{{ govlake_trim(govlake_halfwidth('cast(' ~ expr ~ ' as varchar)')) }}
{%- endmacro %}
