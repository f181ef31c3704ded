{{ config(materialized='incremental', incremental_strategy='govlake_touched',
          post_hook="{{ glx_record_int_batches('human_resources', 'social_insurance') }}") }}
{{ govlake_dedup('human_resources', 'social_insurance') }}
