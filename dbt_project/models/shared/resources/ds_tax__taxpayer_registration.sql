{{ govlake_resource('tax', 'taxpayer_registration') }}
