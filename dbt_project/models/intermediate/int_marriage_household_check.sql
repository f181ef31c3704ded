-- The rows of 婚姻户籍比对 (shared product marriage_household_check, which is this table
-- ordered by id_number): registered residents whose household-registration marital status
-- disagrees with the status that follows from their latest marriage-registration event
-- (GB/T 2261.2: marriage -> 20 已婚, divorce -> 40 离婚; reissues change nothing).
-- Disagreement: derived 20 while the household code is not one of 20/21/22/23 (已婚/初婚/
-- 再婚/复婚), or derived 40 while the household code is not 40.
-- Incremental (docs/adr/0010): only people whose latest event or household row was touched
-- since the last shared build are recomputed.
{{ config(materialized='incremental', incremental_strategy='govlake_touched') }}
{%- set upstreams = ['int_marriage_latest_event', 'int_public_security__household_registration'] -%}
{%- set touched = [] -%}
{%- if execute -%}
  {%- do touched.append(glx_touched_keys_of('int_marriage_latest_event', 'id_number', 'id_number')) -%}
  {%- do touched.append(glx_touched_from('int_public_security__household_registration', ['id_number'], 'id_number')) -%}
{%- endif -%}
{%- set mode = glx_plan_derived(['id_number'], upstreams, touched | join('\nunion all\n')) %}
-- govlake_touched: {{ mode }}
with latest as (
    select * from {{ ref('int_marriage_latest_event') }} as x
    where {{ glx_keys_filter(mode, ['x.id_number'], ['id_number']) }}
),

household as (
    select * from {{ ref('int_public_security__household_registration') }} as x
    where {{ glx_keys_filter(mode, ['x.id_number'], ['id_number']) }}
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
