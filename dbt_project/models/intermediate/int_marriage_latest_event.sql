-- The latest marriage-registration event per person (husband and wife each), ignoring reissues
-- (补发结婚证 changes no status). Ties on the event date are broken deterministically: by
-- certificate number, then batch id, then row number (all descending).
with events as (
    select * from {{ ref('int_civil_affairs__marriage_registration') }}
    where event_type in ('marriage', 'divorce')
),

people as (
    select husband_id_number as id_number, husband_name as name, 'husband' as role,
           event_type, event_date, certificate_number, _batch_id, _row_number
    from events
    union all
    select wife_id_number as id_number, wife_name as name, 'wife' as role,
           event_type, event_date, certificate_number, _batch_id, _row_number
    from events
)

select
    id_number,
    name,
    role,
    event_type,
    event_date,
    certificate_number,
    case event_type when 'marriage' then '20' when 'divorce' then '40' end as derived_status_code
from people
where id_number is not null
qualify row_number() over (
    partition by id_number
    order by event_date desc, certificate_number desc, _batch_id desc, _row_number desc
) = 1
