{{ config(materialized='incremental', incremental_strategy='append') }}
{{ govlake_check('public_security', 'household_registration') }}
