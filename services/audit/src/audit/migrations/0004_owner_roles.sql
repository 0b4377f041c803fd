-- The trail belongs to spm_audit_owner, which runs these migrations and cannot log in. The service logs in
-- as spm_audit, which owns nothing here: it can neither disable the append-only triggers nor grant itself
-- UPDATE or DELETE. It may read the trail and append to it, and move the head of the chain only through
-- advance_head(), forward and onto an entry that exists. Rewriting the trail takes the database admin.
REVOKE ALL ON entries, checkpoints, chain_head FROM spm_audit;
GRANT SELECT, INSERT ON entries, checkpoints TO spm_audit;
GRANT SELECT ON chain_head TO spm_audit;

-- Both run as the owner: the search path is fixed (pg_temp last) so a temporary table of the caller's
-- cannot stand in for the trail.
CREATE FUNCTION lock_head(OUT seq bigint, OUT hash text, OUT now timestamptz)
    LANGUAGE sql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
    SELECT h.seq, h.hash, clock_timestamp() FROM chain_head h FOR UPDATE
$$;

CREATE FUNCTION advance_head(new_seq bigint, new_hash text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
BEGIN
    UPDATE chain_head SET seq = new_seq, hash = new_hash
     WHERE chain_head.seq < new_seq
       AND EXISTS (SELECT 1 FROM entries e WHERE e.seq = new_seq AND e.hash = new_hash);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the chain head moves forward only, onto an entry of the trail'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

REVOKE ALL ON FUNCTION lock_head(), advance_head(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lock_head(), advance_head(bigint, text) TO spm_audit;
