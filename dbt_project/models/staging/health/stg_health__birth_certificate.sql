{{ govlake_stage('health', 'birth_certificate') }}
