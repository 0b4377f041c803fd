-- The privacy requests (CONTRACT section 6) this service has answered, one row each: a confirmed request
-- delivered again, even as a new event, finds its row and is not answered twice. No address is kept here.
CREATE TABLE privacy_answered (
    request_id  uuid        PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('access', 'erasure')),
    answered_at timestamptz NOT NULL DEFAULT now()
);
