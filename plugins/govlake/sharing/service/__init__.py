"""The sharing service (``govlake serve``): the only way analysts and department systems read
shared data. It alone holds the token key, the grants and the lake."""
