{{ govlake_resource('market_regulation', 'enterprise_registration') }}
