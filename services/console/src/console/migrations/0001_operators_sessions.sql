-- Operator accounts, their sessions and the counters that slow down password guessing. The console keeps
-- nothing else: every person's data stays in the service that owns it and is read through its API.
CREATE TABLE operators (
    id              uuid        PRIMARY KEY,
    email           text        NOT NULL UNIQUE,
    role            text        NOT NULL CHECK (role IN ('support', 'admin')),
    -- argon2id, in the PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash   text        NOT NULL,
    -- Set by `operator add` and `operator reset`: the printed password must be replaced at the next login.
    must_change     boolean     NOT NULL DEFAULT true,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A session is known by the SHA-256 of its token: a copy of this table opens no session.
CREATE TABLE sessions (
    token_hash   text        PRIMARY KEY,
    operator_id  uuid        NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_operator ON sessions (operator_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Failed logins per bucket (a keyed hash of the account or of the client address, never either in clear)
-- in fixed windows; shared by replicas.
CREATE TABLE login_failures (
    bucket       text        NOT NULL,
    window_start timestamptz NOT NULL,
    failures     integer     NOT NULL,
    PRIMARY KEY (bucket, window_start)
);
