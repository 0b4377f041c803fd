-- The search's words kept in a column, computed by Postgres on every insert and update (an erasure's too),
-- and the index built on it, not on the expression. A phrase ("ma so thue") is not answered by the index
-- alone: every message holding all its words is rechecked for their order, and the recheck computed the
-- folded document and its words again for each (unaccent and to_tsvector over name, address, subject and
-- body, ~40 µs a message): 365 ms for the 8,500 of 100,000 messages holding those three words
-- (bench.console). Reading the stored words instead costs about a microsecond a message. The insert computes
-- the words once, as the expression index did; each message keeps them, a few hundred bytes.
ALTER TABLE messages ADD COLUMN search_words tsvector
    GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, search_document(name, email, subject, body))) STORED;

-- The merge names the index, so it goes and comes back with it (same definition as in 0005).
DROP FUNCTION merge_search_entries();
DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING gin (search_words);
CREATE FUNCTION merge_search_entries() RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = contact, pg_temp
    RETURN CASE WHEN pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('contact.messages_search'))
        THEN pg_catalog.gin_clean_pending_list('contact.messages_search'::regclass) ELSE 0 END;
