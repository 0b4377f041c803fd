"""A tamper-evident trail of every event, and page-view trends that know no one."""
