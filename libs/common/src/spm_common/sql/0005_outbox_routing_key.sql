-- The routing key of an event whose key is not its type (NULL: the type). The notifier sends each outcome to
-- `notification.sent.<requester>`, so a service's queue receives the outcomes of its own requests only.
ALTER TABLE outbox ADD COLUMN routing_key text;
