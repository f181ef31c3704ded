-- The latest marriage-registration event per person (husband and wife each), ignoring reissues
-- (补发结婚证 changes no status). Ties on the event date are broken deterministically: by
-- certificate number, then batch id, then row number (all descending).
-- Incremental (docs/adr/0010): only the husbands and wives named, before or after the change,
-- by a marriage-registration row touched since the last shared build are recomputed.
{{ config(materialized='incremental', incremental_strategy='govlake_touched') }}
{%- set marriage = 'int_civil_affairs__marriage_registration' -%}
{%- set touched = glx_touched_from(marriage, ['husband_id_number', 'wife_id_number'], 'id_number') if execute else '' -%}
{%- set mode = glx_plan_derived(['id_number'], [marriage], touched) %}
-- govlake_touched: {{ mode }}
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
from people as p
where p.id_number is not null
  and {{ glx_keys_filter(mode, ['p.id_number'], ['id_number']) }}
qualify row_number() over (
    partition by id_number
    order by event_date desc, certificate_number desc, _batch_id desc, _row_number desc
) = 1
