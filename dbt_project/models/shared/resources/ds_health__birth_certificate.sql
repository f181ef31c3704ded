{{ govlake_resource('health', 'birth_certificate') }}
