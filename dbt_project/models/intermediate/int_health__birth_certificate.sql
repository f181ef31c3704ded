{{ config(materialized='incremental', incremental_strategy='govlake_touched',
          post_hook="{{ glx_record_int_batches('health', 'birth_certificate') }}") }}
{{ govlake_dedup('health', 'birth_certificate') }}
