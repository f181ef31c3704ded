{{ govlake_check('public_security', 'household_registration') }}
