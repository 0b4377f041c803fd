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

CREATE INDEX messages_search ON messages
    USING gin (search_document(name, email, subject, body) public.gin_trgm_ops);

ALTER TABLE messages ADD COLUMN closed_by text;
ALTER TABLE replies ADD COLUMN replied_by text;
