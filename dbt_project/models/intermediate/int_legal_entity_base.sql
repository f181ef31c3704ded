-- The rows of 法人基础库 (shared product legal_entity_base, which is this table ordered by
-- uscc): one row per unified social credit code, enterprise registration (market regulation)
-- combined with taxpayer registration (tax).
-- Incremental (docs/adr/0010): only the codes whose enterprise or taxpayer rows were touched
-- since the last shared build are recomputed.
{{ config(materialized='incremental', incremental_strategy='govlake_touched') }}
{%- set sources = {
    'int_market_regulation__enterprise_registration': ['uscc'],
    'int_tax__taxpayer_registration': ['uscc'],
} -%}
{%- set mode = glx_plan_touched_by('uscc', sources) %}
-- govlake_touched: {{ mode }}
with enterprise as (
    select * from {{ ref('int_market_regulation__enterprise_registration') }} as x
    where {{ glx_keys_filter(mode, ['x.uscc'], ['uscc']) }}
),

taxpayer as (
    select * from {{ ref('int_tax__taxpayer_registration') }} as x
    where {{ glx_keys_filter(mode, ['x.uscc'], ['uscc']) }}
)

select
    coalesce(e.uscc, t.uscc) as uscc,
    e.enterprise_name,
    e.enterprise_type,
    e.legal_rep_name,
    coalesce(e.legal_rep_id_number, t.legal_rep_id_number) as legal_rep_id_number,
    e.establishment_date,
    e.registered_capital_10k_cny,
    e.address,
    e.registration_status,
    t.taxpayer_name,
    t.registration_date as tax_registration_date,
    t.credit_rating,
    t.tax_authority,
    e.uscc is not null as in_market_regulation,
    t.uscc is not null as in_tax
from enterprise as e
full outer join taxpayer as t on t.uscc = e.uscc
