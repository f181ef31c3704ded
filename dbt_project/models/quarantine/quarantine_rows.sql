{{ govlake_quarantine_rows() }}
