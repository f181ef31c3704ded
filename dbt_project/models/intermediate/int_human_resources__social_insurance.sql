{{ govlake_dedup('human_resources', 'social_insurance') }}
