-- The trail is append-only for the service itself: its role loses UPDATE, DELETE and TRUNCATE on the
-- trail, and a trigger refuses them anyway (the role owns the table, so it could grant them back; the
-- trigger is a second lock it would have to remove on purpose). A separate owner role for migrations,
-- with the service's role granted only SELECT and INSERT, is the stronger setup (see the README).
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON entries FROM CURRENT_USER;

-- Verified heads of the chain: incremental verification starts from the last one, a full one checks
-- them all. Append-only too.
CREATE TABLE checkpoints (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq         bigint      NOT NULL,
    hash        text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkpoints_seq ON checkpoints (seq);
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON checkpoints FROM CURRENT_USER;

-- Queries by time and by person, newest pages of results by sequence number.
CREATE INDEX entries_recorded_at ON entries (recorded_at);
CREATE INDEX entries_subject_seq ON entries (subject_ref, seq) WHERE subject_ref IS NOT NULL;
