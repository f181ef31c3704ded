{{ govlake_check('human_resources', 'social_insurance') }}
