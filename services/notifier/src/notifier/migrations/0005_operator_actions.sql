-- The notifier records which operator acted (the console names them in X-SPM-Operator): who last retried a
-- delivery, and who lifted a recipient's suppression, when and why (kept on the recipient, so a privacy erasure
-- of the recipient takes it along).
ALTER TABLE deliveries ADD COLUMN retried_by text;
ALTER TABLE recipients
    ADD COLUMN unsuppressed_at     timestamptz,
    ADD COLUMN unsuppressed_by     text,
    ADD COLUMN unsuppressed_reason text;
CREATE INDEX recipients_suppressed ON recipients (suppressed_at) WHERE suppressed_at IS NOT NULL;
