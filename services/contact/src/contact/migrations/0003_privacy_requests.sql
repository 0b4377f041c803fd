-- Privacy requests (access, erasure) and each service's answer to them. A request keeps the address only
-- while it needs it (to confirm, to tell of an extension, to send the answer): once the final e-mail is
-- requested, `email` is NULL and the answers keep their summary and counts, never the export.
CREATE TABLE privacy_requests (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('access', 'erasure')),
    status           text        NOT NULL DEFAULT 'unconfirmed'
                                 CHECK (status IN ('unconfirmed', 'in-progress', 'completed')),
    email            text,
    locale           text        NOT NULL CHECK (locale IN ('vi', 'en')),
    received_at      timestamptz NOT NULL,
    token_expires_at timestamptz NOT NULL,
    ack_due_at       timestamptz NOT NULL,
    acknowledged_at  timestamptz,
    confirmed_at     timestamptz,
    due_at           timestamptz NOT NULL,
    extended_at      timestamptz,
    extension_reason text,
    completed_at     timestamptz,
    final_mail       text        CHECK (final_mail IN ('queued', 'sent', 'failed')),
    -- Events of this request in the outbox that carry the address; deleted once published and done with.
    event_ids        text[]      NOT NULL DEFAULT '{}',
    CHECK (status <> 'completed' OR email IS NULL)
);
CREATE INDEX privacy_requests_status ON privacy_requests (status, received_at DESC, id DESC);
CREATE INDEX privacy_requests_received ON privacy_requests (received_at DESC, id DESC);

CREATE TABLE privacy_answers (
    request_id  uuid        NOT NULL REFERENCES privacy_requests (id) ON DELETE CASCADE,
    service     text        NOT NULL,
    summary     text        NOT NULL,
    counts      jsonb       NOT NULL DEFAULT '{}',
    -- Access only, and only until the final e-mail is requested.
    export      jsonb,
    answered_at timestamptz NOT NULL,
    PRIMARY KEY (request_id, service)
);
