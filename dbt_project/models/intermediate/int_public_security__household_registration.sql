{{ govlake_dedup('public_security', 'household_registration') }}
