{{ govlake_dedup('civil_affairs', 'marriage_registration') }}
