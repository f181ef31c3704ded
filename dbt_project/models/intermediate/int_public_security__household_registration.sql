{{ config(materialized='incremental', incremental_strategy='govlake_touched',
          post_hook="{{ glx_record_int_batches('public_security', 'household_registration') }}") }}
{{ govlake_dedup('public_security', 'household_registration') }}
