{{ config(materialized='incremental', incremental_strategy='append') }}
{{ govlake_check('health', 'birth_certificate') }}
