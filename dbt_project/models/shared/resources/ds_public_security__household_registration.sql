{{ govlake_resource('public_security', 'household_registration') }}
