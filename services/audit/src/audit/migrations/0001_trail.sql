-- The audit trail: one entry per event, each hash covering the previous one.
CREATE TABLE entries (
    seq         bigint      PRIMARY KEY,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    source      text        NOT NULL,
    event_time  text,
    purpose     text,
    subject_ref text,
    payload     text        NOT NULL,
    prev_hash   text        NOT NULL,
    hash        text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_subject_ref ON entries (subject_ref) WHERE subject_ref IS NOT NULL;
CREATE INDEX entries_type ON entries (event_type);

-- The head of the chain, one row, locked by each append so appends are serial and the chain never forks.
CREATE TABLE chain_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint  NOT NULL,
    hash text    NOT NULL
);
INSERT INTO chain_head (seq, hash) VALUES (0, repeat('0', 64));
