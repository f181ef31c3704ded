{{ config(materialized='incremental', incremental_strategy='append') }}
{{ govlake_check('market_regulation', 'enterprise_registration') }}
