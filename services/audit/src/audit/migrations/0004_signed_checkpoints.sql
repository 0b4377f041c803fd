-- Checkpoints signed with SPM_AUDIT_CHECKPOINT_KEY (Ed25519), a key that is not in the database: `time` is the
-- text that was signed with the sequence and the hash, `public_key` the key that signed it (so checkpoints
-- made before a key rotation still verify against the old public key). Checkpoints recorded before this
-- migration stay unsigned (NULL): they are not exported.
ALTER TABLE checkpoints
    ADD COLUMN signed_time text,
    ADD COLUMN public_key  text,
    ADD COLUMN signature   text;
