{{ govlake_stage('public_security', 'household_registration') }}
