-- Catalogue, purchasers, orders, license keys, consent, fan-outs and rate limits of the orders service.
-- No column ever holds card data: it is removed before anything reaches this schema.

CREATE TABLE products (
    sku           text        PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9._-]*$'),
    name_en       text        NOT NULL,
    name_vi       text        NOT NULL,
    download_url  text        NOT NULL,
    major_version integer     NOT NULL CHECK (major_version >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO products (sku, name_en, name_vi, download_url, major_version) VALUES
    ('SPM-DICT-PRO', 'SPM Dictionary Pro', 'Từ điển SPM Pro', 'https://spmgroup.vn/dl/dict-pro.exe', 5),
    ('SPM-DICT-STD', 'SPM Dictionary Standard', 'Từ điển SPM Tiêu chuẩn', 'https://spmgroup.vn/dl/dict-std.exe', 5),
    ('SPM-OCR', 'SPM OCR', 'SPM Nhận dạng chữ', 'https://spmgroup.vn/dl/ocr.exe', 3),
    ('SPM-TYPE', 'SPM Vietnamese Typing', 'SPM Gõ tiếng Việt', 'https://spmgroup.vn/dl/type.exe', 2);

-- One purchaser per normalised address; newer orders update name, phone, address and language.
CREATE TABLE purchasers (
    id                       bigserial   PRIMARY KEY,
    email                    text        NOT NULL UNIQUE,
    name                     text        NOT NULL,
    phone                    text,
    address                  jsonb,
    locale                   text        NOT NULL CHECK (locale IN ('vi', 'en')),
    last_order_at            timestamptz NOT NULL,
    upgrades_unsubscribed_at timestamptz,
    news_unsubscribed_at     timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id                     uuid          PRIMARY KEY,
    source                 text          NOT NULL,
    order_id               text          NOT NULL,
    purchaser_id           bigint        NOT NULL REFERENCES purchasers (id),
    placed_at              timestamptz   NOT NULL,
    currency               text          NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total                  numeric(14,2) NOT NULL,
    locale                 text          NOT NULL,
    marketing_consent      boolean       NOT NULL,
    privacy_policy_version integer       NOT NULL,
    via                    text          NOT NULL CHECK (via IN ('event', 'webhook')),
    event_id               text,
    card_data_removed      boolean       NOT NULL DEFAULT false,
    recorded_at            timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (source, order_id)
);
CREATE INDEX orders_purchaser ON orders (purchaser_id, placed_at DESC);

CREATE TABLE order_items (
    order_id     uuid          NOT NULL REFERENCES orders (id),
    line         integer       NOT NULL,
    sku          text          NOT NULL REFERENCES products (sku),
    product_name text          NOT NULL,
    quantity     integer       NOT NULL CHECK (quantity > 0),
    unit_price   numeric(14,2) NOT NULL,
    PRIMARY KEY (order_id, line)
);

-- Who bought what, and the latest order of it: the upgrade fan-out walks this by (sku, purchaser_id).
CREATE TABLE purchases (
    sku            text        NOT NULL,
    purchaser_id   bigint      NOT NULL REFERENCES purchasers (id),
    last_placed_at timestamptz NOT NULL,
    PRIMARY KEY (sku, purchaser_id)
);

-- One key per unit of an item line, or per purchaser of a release with new registration information.
CREATE TABLE license_keys (
    id            bigserial   PRIMARY KEY,
    license_key   text        NOT NULL UNIQUE,
    purchaser_id  bigint      NOT NULL REFERENCES purchasers (id),
    sku           text        NOT NULL,
    major_version integer     NOT NULL,
    order_id      uuid        REFERENCES orders (id),
    release_id    text,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((order_id IS NULL) <> (release_id IS NULL)),
    UNIQUE (release_id, purchaser_id)
);
CREATE INDEX license_keys_purchaser ON license_keys (purchaser_id);

-- Consent to news: when, with which order, under which privacy-policy version; withdrawn by unsubscribing.
CREATE TABLE consents (
    id             bigserial   PRIMARY KEY,
    purchaser_id   bigint      NOT NULL REFERENCES purchasers (id),
    order_id       uuid        NOT NULL REFERENCES orders (id),
    policy_version integer     NOT NULL,
    given_at       timestamptz NOT NULL,
    withdrawn_at   timestamptz
);
CREATE INDEX consents_in_force ON consents (purchaser_id) WHERE withdrawn_at IS NULL;

-- A release or announcement to send, and how far the sending got: batches advance the cursor (a
-- purchaser id) in the transaction that enqueues their notifications, so a crash resumes where it stopped.
CREATE TABLE fanouts (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('upgrade', 'news')),
    key         text        NOT NULL,
    source      text        NOT NULL,
    event_id    text        NOT NULL,
    payload     jsonb       NOT NULL,
    cursor      bigint      NOT NULL DEFAULT 0,
    notified    integer     NOT NULL DEFAULT 0,
    batches     integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (kind, key)
);
CREATE INDEX fanouts_running ON fanouts (id) WHERE finished_at IS NULL;

-- Fixed-window counters keyed by a keyed hash (of a client address, or of an e-mail address).
CREATE TABLE rate_limits (
    bucket       text        PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits         integer     NOT NULL
);
