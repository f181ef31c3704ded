{{ govlake_dedup('health', 'birth_certificate') }}
