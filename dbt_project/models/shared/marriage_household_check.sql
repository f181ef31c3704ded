-- 婚姻户籍比对: registered residents whose household-registration marital status disagrees
-- with the status that follows from their latest marriage-registration event
-- (GB/T 2261.2: marriage -> 20 已婚, divorce -> 40 离婚; reissues change nothing).
-- Disagreement: derived 20 while the household code is not one of 20/21/22/23 (已婚/初婚/
-- 再婚/复婚), or derived 40 while the household code is not 40.
with latest as (
    select * from {{ ref('int_marriage_latest_event') }}
),

household as (
    select * from {{ ref('int_public_security__household_registration') }}
)

select
    h.id_number,
    h.name,
    h.marital_status_code as household_status_code,
    l.derived_status_code,
    l.event_type as latest_event_type,
    l.event_date as latest_event_date,
    l.certificate_number
from household as h
join latest as l on l.id_number = h.id_number
where (l.derived_status_code = '20' and coalesce(h.marital_status_code, '90') not in ('20', '21', '22', '23'))
   or (l.derived_status_code = '40' and coalesce(h.marital_status_code, '90') <> '40')
order by h.id_number
