-- Erasure (a privacy request, CONTRACT section 6) anonymises a purchaser rather than deleting it: the orders,
-- items and license keys that accounting law requires stay, attached to a purchaser row without address,
-- name, phone or postal address. Those columns may now be empty; `erased_at` says when and why they are.
-- (Several erased purchasers may coexist: a unique column allows any number of nulls.)
ALTER TABLE purchasers
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN name DROP NOT NULL,
    ADD COLUMN erased_at timestamptz,
    ADD CONSTRAINT purchasers_erased_empty CHECK (erased_at IS NULL OR (email IS NULL AND name IS NULL
        AND phone IS NULL AND address IS NULL));
