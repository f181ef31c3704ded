{{ govlake_stage('market_regulation', 'enterprise_registration') }}
