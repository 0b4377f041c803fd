-- A message is found by its address in the one spelling every service compares addresses in
-- (spm_common.addresses.normalise_address: NFC, trimmed, lower case), kept in `email_key` beside `email`,
-- which stays as the visitor typed it (domain in lower case): that is what operators see and replies go to.
--
-- Before, a privacy request matched `lower(email)` (index messages_email_lower), Postgres's lower case,
-- which is not Python's in two places: Python lower-cases "İ" (U+0130) to "i" plus a combining dot above,
-- and a final "Σ" (after a letter, not before one, skipping the case-ignorable . ' ^ ` : and combining
-- marks between) to "ς"; Postgres to "i" and "σ". An address holding either was not found by the request
-- that named it. The service now writes `email_key` with the Python function; existing rows get the same
-- value here, those two differences spelled out (test_address_key.py checks the two agree).
ALTER TABLE messages ADD COLUMN email_key text;
UPDATE messages SET email_key = lower(regexp_replace(
    replace(normalize(btrim(email), NFC), U&'\0130', U&'i\0307'),
    '(?<=[[:alpha:]][.''^`:\u0300-\u036f]*)Σ(?![.''^`:\u0300-\u036f]*[[:alpha:]])', 'ς', 'g'));
ALTER TABLE messages ALTER COLUMN email_key SET NOT NULL;
DROP INDEX messages_email_lower;
CREATE INDEX messages_email_key ON messages (email_key);
