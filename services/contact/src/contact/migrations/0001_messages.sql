-- Contact messages as received from the website's form.
CREATE TABLE messages (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    email       text        NOT NULL,
    subject     text,
    body        text        NOT NULL,
    locale      text        NOT NULL CHECK (locale IN ('vi', 'en')),
    status      text        NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'answered', 'closed')),
    ack_message_id text     NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_received_at ON messages (received_at DESC);
