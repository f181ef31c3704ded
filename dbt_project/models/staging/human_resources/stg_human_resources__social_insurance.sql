{{ govlake_stage('human_resources', 'social_insurance') }}
