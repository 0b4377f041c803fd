-- Crypto-shredding (CONTRACT section 6): a person's subject reference is HMAC-SHA256 of their normalised
-- address under a random key of their own, kept here and found by `lookup`, a keyed hash of the address under
-- SPM_AUDIT_SECRET (in a domain of its own, so it never equals a reference). Erasing the person deletes the
-- row: their entries stay exactly as they were, the chain still verifies, and nothing can link their
-- references to an address again. No address is stored here.
CREATE TABLE subject_keys (
    lookup     bytea       PRIMARY KEY,
    key        bytea       NOT NULL CHECK (length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Entries recorded before this migration keep the reference they were chained with: HMAC of the address
-- under SPM_AUDIT_SECRET itself (the "legacy" reference). They cannot be re-keyed without rewriting the
-- chain, so they stay linkable by whoever holds that secret; the operators' search by address still finds
-- them. When a person with such entries is erased, their legacy reference is listed here, and the search no
-- longer answers for it. (It is a reference the entries hold already, not an address.) Honest limit: until
-- SPM_AUDIT_SECRET is retired, someone with the database and the secret can still link those older entries.
CREATE TABLE erased_legacy_refs (
    subject_ref text        PRIMARY KEY,
    erased_at   timestamptz NOT NULL DEFAULT now()
);
