-- Tables of the test-only probe service: a state change, and one row per handler effect.
CREATE TABLE things (
    id   text PRIMARY KEY,
    note text
);

CREATE TABLE effects (
    n          bigserial   PRIMARY KEY,
    source     text        NOT NULL,
    event_id   text        NOT NULL,
    event_type text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
