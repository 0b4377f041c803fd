-- A privacy request (access or erasure) finds every delivery to an address through its reference, without a
-- scan of the delivery log.
CREATE INDEX deliveries_recipient ON deliveries (recipient_ref);
