-- 法人基础库: one row per unified social credit code, enterprise registration (market
-- regulation) combined with taxpayer registration (tax).
with enterprise as (
    select * from {{ ref('int_market_regulation__enterprise_registration') }}
),

taxpayer as (
    select * from {{ ref('int_tax__taxpayer_registration') }}
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
order by 1
