{{ govlake_stage('civil_affairs', 'marriage_registration') }}
