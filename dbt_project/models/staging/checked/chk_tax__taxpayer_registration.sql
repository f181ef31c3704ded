{{ govlake_check('tax', 'taxpayer_registration') }}
