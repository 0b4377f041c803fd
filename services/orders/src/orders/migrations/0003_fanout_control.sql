-- Fan-outs an operator starts from the console: who started it, how many it will reach (counted when it
-- starts), and pause / cancel. A paused fan-out is skipped by the worker; a cancelled one is finished.
ALTER TABLE fanouts
    ADD COLUMN started_by   text,
    ADD COLUMN total        integer,
    ADD COLUMN paused_at    timestamptz,
    ADD COLUMN cancelled_at timestamptz;
