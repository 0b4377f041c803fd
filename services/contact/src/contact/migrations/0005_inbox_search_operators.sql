-- The inbox's search, insensitive to case and to Vietnamese diacritics ("nguyen" finds "Nguyễn", "đ" is
-- "d"), served by a trigram index; and which operator replied, closed or reopened (X-SPM-Operator).
--
-- unaccent() is only STABLE (it reads its dictionary through search_path), so it cannot index. The usual
-- way round: an IMMUTABLE wrapper that names the dictionary and the function by schema, so nothing it does
-- depends on search_path. The extensions are created by the bootstrap (spm-admin bootstrap), which has the
-- rights to; this role only uses them.
CREATE FUNCTION fold(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN lower(public.unaccent('public.unaccent'::regdictionary, $1));

-- What a search looks in: name, address, subject and body, folded.
CREATE FUNCTION search_document(name text, email text, subject text, body text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN fold(coalesce(name, '') || ' ' || coalesce(email, '') || ' ' || coalesce(subject, '') || ' '
        || coalesce(body, ''));

-- Indexed as words (full text, the 'simple' configuration: no stemming, every word kept), not trigrams: a
-- message of a few hundred characters is a few dozen index entries instead of hundreds, which every insert
-- pays. New entries wait in the index's pending list; left to the insert that fills it (4 MB), its merge
-- held that insert ~50 ms (bench.contact_intake's p99: 17-20 ms without the index, 45-72 ms with it,
-- autovacuum off as on CI). The service merges it in the background instead (`merge_search_entries`).
CREATE INDEX messages_search ON messages
    USING gin (to_tsvector('simple'::regconfig, search_document(name, email, subject, body)));

-- Merging the pending list needs the index's owner; the service's login may do this and nothing more. One
-- merge at a time: a replica that finds another merging skips its turn rather than wait for it.
CREATE FUNCTION merge_search_entries() RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = contact, pg_temp
    RETURN CASE WHEN pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('contact.messages_search'))
        THEN pg_catalog.gin_clean_pending_list('contact.messages_search'::regclass) ELSE 0 END;

ALTER TABLE messages ADD COLUMN closed_by text;
ALTER TABLE replies ADD COLUMN replied_by text;
