{{ config(materialized='incremental', incremental_strategy='append') }}
{{ govlake_check('civil_affairs', 'marriage_registration') }}
