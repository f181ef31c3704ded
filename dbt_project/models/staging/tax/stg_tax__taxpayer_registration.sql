{{ govlake_stage('tax', 'taxpayer_registration') }}
