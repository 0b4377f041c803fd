-- The contact form's and privacy requests' counters moved to the table every service's rate limits share
-- (`rate_windows`, spm_common's migration 0006, the same design under another name). The counts of the
-- windows running at the upgrade are not carried over: it forgives at most one window (an hour by default).
DROP TABLE rate_counters;
