-- Dead letters older than SPM_DLQ_RETENTION_DAYS, moved off the service's `.dlq` queue with personal data
-- masked (spm_common.retention), and deleted once they have been parked that long again.
CREATE TABLE dead_letters_parked (
    id          bigserial   PRIMARY KEY,
    message_id  text,
    event_type  text,
    reason      text,
    failed_at   timestamptz,
    body        jsonb       NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_parked_at ON dead_letters_parked (parked_at);
