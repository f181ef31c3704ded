{{ govlake_check('civil_affairs', 'marriage_registration') }}
