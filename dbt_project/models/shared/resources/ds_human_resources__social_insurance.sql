{{ govlake_resource('human_resources', 'social_insurance') }}
