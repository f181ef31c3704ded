{{ config(materialized='incremental', incremental_strategy='append') }}
{{ govlake_check('tax', 'taxpayer_registration') }}
