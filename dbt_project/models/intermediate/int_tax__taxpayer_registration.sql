{{ govlake_dedup('tax', 'taxpayer_registration') }}
