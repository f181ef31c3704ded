-- Row conservation: for every feed and batch, raw rows = staging rows + distinct quarantined rows.
{{ govlake_row_conservation() }}
