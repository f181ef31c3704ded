{{ govlake_check('health', 'birth_certificate') }}
