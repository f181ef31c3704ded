{{ config(materialized='incremental', incremental_strategy='govlake_touched',
          post_hook="{{ glx_record_int_batches('civil_affairs', 'marriage_registration') }}") }}
{{ govlake_dedup('civil_affairs', 'marriage_registration') }}
