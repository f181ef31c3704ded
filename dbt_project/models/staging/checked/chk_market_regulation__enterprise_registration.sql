{{ govlake_check('market_regulation', 'enterprise_registration') }}
