-- Page views that know no one: no address, no user agent, no query string; a visitor is a hash made with
-- the day's salt, and the salts of days before yesterday are deleted.
CREATE TABLE pageviews (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    viewed_at     timestamptz NOT NULL,
    path          text        NOT NULL CHECK (length(path) <= 512),
    referrer_host text        CHECK (length(referrer_host) <= 253),
    visitor_hash  bytea       NOT NULL
);
CREATE INDEX pageviews_viewed_at ON pageviews (viewed_at);

CREATE TABLE visitor_salts (
    day        date        PRIMARY KEY,
    salt       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
