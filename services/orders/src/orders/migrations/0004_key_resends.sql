-- License keys an operator e-mailed again to their purchaser from the console: who asked (the console's
-- `X-SPM-Operator`), when, and how many keys went. `request_id` comes from the console's form, so a form
-- sent twice (a double click, a retried request) sends one e-mail. Nothing here names the purchaser but
-- the row it belongs to, so an erasure, which empties that row, leaves nothing to find.
CREATE TABLE key_resends (
    id           bigserial   PRIMARY KEY,
    request_id   uuid        NOT NULL UNIQUE,
    purchaser_id bigint      NOT NULL REFERENCES purchasers (id),
    operator     text        NOT NULL,
    license_keys integer     NOT NULL CHECK (license_keys > 0),
    event_id     text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX key_resends_purchaser ON key_resends (purchaser_id, requested_at DESC);
