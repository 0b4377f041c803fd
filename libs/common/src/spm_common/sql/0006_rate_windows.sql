-- Rate-limit counters, one design for every limit of every service (spm_common.ratelimit): the contact form
-- and privacy requests, license recovery, operator logins. One row per bucket and fixed window; a bucket is
-- `<use>:<keyed hash>/<window seconds>` (of a client address, an e-mail address, an account): never anyone in
-- clear, and a changed window length starts its counts afresh.
--
-- Unlogged: no WAL, so a hit costs no disk flush and the hot rows stay cheap under load. The counters survive
-- restarts of the services; a crash of Postgres itself empties them, which only forgives a window.
CREATE UNLOGGED TABLE rate_windows (
    bucket       text        NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer     NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX rate_windows_expires_at ON rate_windows (expires_at);
