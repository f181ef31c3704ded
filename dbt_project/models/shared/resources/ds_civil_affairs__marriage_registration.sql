{{ govlake_resource('civil_affairs', 'marriage_registration') }}
