{{ config(materialized='incremental', incremental_strategy='govlake_touched',
          post_hook="{{ glx_record_int_batches('tax', 'taxpayer_registration') }}") }}
{{ govlake_dedup('tax', 'taxpayer_registration') }}
