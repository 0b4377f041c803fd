-- Deliveries are a queue too (pending, sending, sent; sent rows are kept): vacuum after every 10,000 changes,
-- not once a fifth of the table has changed, so the claim does not step over the entries of rows sent since.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
