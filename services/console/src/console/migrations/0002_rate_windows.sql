-- Failed logins moved to the table every service's rate limits share (`rate_windows`, spm_common's migration
-- 0006: the same fixed windows, unlogged, swept with the sessions). The counts of the windows running at the
-- upgrade are not carried over: it forgives at most one window (15 minutes by default).
DROP TABLE login_failures;
