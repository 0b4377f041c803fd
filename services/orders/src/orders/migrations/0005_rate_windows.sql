-- License recovery's counters moved to the table every service's rate limits share (`rate_windows`,
-- spm_common's migration 0006): fixed windows aligned on the clock, where this table's began at a bucket's
-- first request. The counts of the windows running at the upgrade are not carried over: it forgives at most
-- one window (an hour by default).
DROP TABLE rate_limits;
