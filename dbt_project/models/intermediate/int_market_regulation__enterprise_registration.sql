{{ config(materialized='incremental', incremental_strategy='govlake_touched',
          post_hook="{{ glx_record_int_batches('market_regulation', 'enterprise_registration') }}") }}
{{ govlake_dedup('market_regulation', 'enterprise_registration') }}
