-- One row per e-mail: recorded before it is sent, marked after. The address and the request stay only
-- until the e-mail has left; afterwards the row keeps a pseudonymous reference and the outcome.
CREATE TABLE deliveries (
    id              bigserial   PRIMARY KEY,
    request_event_id text       NOT NULL,
    recipient_ref   text        NOT NULL,
    purpose         text        NOT NULL,
    template        text        NOT NULL,
    locale          text        NOT NULL,
    reference       text,
    message_id      text        NOT NULL,
    request         jsonb,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (request_event_id, recipient_ref)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
