-- The outbox is a queue: each event is inserted, updated once published, and kept a day. With autovacuum's
-- default (once a fifth of the table has changed: hundreds of thousands of rows at a day's retention) the
-- entries of the rows published meanwhile stay in `outbox_pending`, and every claim steps over them. Vacuum
-- it after every 10,000 changes instead.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
