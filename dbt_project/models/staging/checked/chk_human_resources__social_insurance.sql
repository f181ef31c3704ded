{{ config(materialized='incremental', incremental_strategy='append') }}
{{ govlake_check('human_resources', 'social_insurance') }}
