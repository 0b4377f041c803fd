-- Lease-based sending: a claimed delivery is 'sending' until its lease runs out, so no transaction or row
-- lock is held across an SMTP conversation. Consent facts per pseudonymous recipient reference: whether the
-- address is a purchaser, whether a hard bounce suppressed it, and what it unsubscribed from.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries
    ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    ADD COLUMN correlation_id  text,
    ADD COLUMN lease_until     timestamptz,
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN failed_at       timestamptz,
    ADD COLUMN operator_retries integer NOT NULL DEFAULT 0;
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'sending';
CREATE INDEX deliveries_failed ON deliveries (id) WHERE status = 'failed';
-- Kept requests of failed deliveries are erased after a retention period (see the notifier's README part).
CREATE INDEX deliveries_failed_kept ON deliveries (failed_at) WHERE status = 'failed' AND request IS NOT NULL;

CREATE TABLE recipients (
    recipient_ref     text        PRIMARY KEY,
    purchaser_since   timestamptz,
    suppressed_at     timestamptz,
    suppressed_reason text
);

CREATE TABLE unsubscribes (
    recipient_ref   text        NOT NULL,
    category        text        NOT NULL CHECK (category IN ('upgrades', 'news')),
    unsubscribed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recipient_ref, category)
);
