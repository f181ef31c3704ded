-- 人口基础库: one row per person (standard 18-digit ID number) known to any department.
-- Attributes come from household registration (null when the person is not registered there);
-- known_by lists the departments whose current data names the person.
with known as (
    select id_number, 'public_security' as dept from {{ ref('int_public_security__household_registration') }}
    union all
    select husband_id_number, 'civil_affairs' from {{ ref('int_civil_affairs__marriage_registration') }}
    union all
    select wife_id_number, 'civil_affairs' from {{ ref('int_civil_affairs__marriage_registration') }}
    union all
    select id_number, 'human_resources' from {{ ref('int_human_resources__social_insurance') }}
    union all
    select mother_id_number, 'health' from {{ ref('int_health__birth_certificate') }}
    union all
    select father_id_number, 'health' from {{ ref('int_health__birth_certificate') }}
    union all
    select legal_rep_id_number, 'market_regulation' from {{ ref('int_market_regulation__enterprise_registration') }}
    union all
    select legal_rep_id_number, 'tax' from {{ ref('int_tax__taxpayer_registration') }}
),

people as (
    select
        id_number,
        string_agg(distinct dept, ',' order by dept) as known_by,
        cast(count(distinct dept) as integer) as department_count
    from known
    where id_number is not null
    group by id_number
),

household as (
    select * from {{ ref('int_public_security__household_registration') }}
)

select
    p.id_number,
    h.name,
    h.gender_code,
    h.birth_date,
    h.ethnicity_code,
    h.division_code,
    h.address,
    h.marital_status_code,
    h.phone,
    h.id_number is not null as in_household_registration,
    p.known_by,
    p.department_count
from people as p
left join household as h on h.id_number = p.id_number
order by p.id_number
