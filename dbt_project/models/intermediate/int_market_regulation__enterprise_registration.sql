{{ govlake_dedup('market_regulation', 'enterprise_registration') }}
