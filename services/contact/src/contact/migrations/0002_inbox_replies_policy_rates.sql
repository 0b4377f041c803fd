-- Privacy policy versions, the version in force on each message, the acknowledgement's delivery, replies
-- with their delivery status, and rate-limit counters keyed by a keyed hash (never an address).
CREATE TABLE privacy_policies (
    version        integer     PRIMARY KEY CHECK (version > 0),
    text_vi        text        NOT NULL,
    text_en        text        NOT NULL,
    sha256         text        NOT NULL,
    effective_from timestamptz NOT NULL,
    published_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE messages
    ADD COLUMN policy_version integer REFERENCES privacy_policies (version),
    ADD COLUMN ack_status     text NOT NULL DEFAULT 'queued' CHECK (ack_status IN ('queued', 'sent', 'failed')),
    ADD COLUMN ack_error      text,
    ADD COLUMN closed_at      timestamptz;
CREATE INDEX messages_status_received_at ON messages (status, received_at DESC, id DESC);

CREATE TABLE replies (
    id                  uuid        PRIMARY KEY,
    message_id          uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    body                text        NOT NULL,
    mail_message_id     text        NOT NULL,
    delivery_status     text        NOT NULL DEFAULT 'queued' CHECK (delivery_status IN ('queued', 'sent', 'failed')),
    delivery_error      text,
    delivery_updated_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replies_message ON replies (message_id, created_at);

-- Unlogged: no WAL, so a hit costs no disk flush and the hot rows stay cheap under load. The counters
-- survive restarts of the service; a crash of Postgres itself empties them, which only forgives a window.
CREATE UNLOGGED TABLE rate_counters (
    bucket       text        NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer     NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
CREATE INDEX rate_counters_expires_at ON rate_counters (expires_at);
