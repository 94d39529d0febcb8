-- The Solana follower (watcher/chains/solana*.py): finalization of observed rows
-- and the token accounts it follows.
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- finalization

-- name: solana_observed
-- Payments still waiting for finalization, oldest slot first (orphan detection).
SELECT id, tx_hash, log_index, block_number, amount
FROM payments
WHERE chain = $2 AND state = 'observed'
ORDER BY block_number, id
LIMIT $1;

-- name: solana_open_rows_for
-- Rows of these signatures that a finalized read may still credit or orphan.
SELECT id, tx_hash, log_index, token_account, amount, state
FROM payments
WHERE chain = $2 AND tx_hash = ANY($1::text[]) AND state = 'observed';

-- ---------------- followed token accounts and their owners

-- name: solana_history_accounts
-- Token accounts with Solana payments credited (or observed, awaiting credit): the
-- follower keeps following them (and doctor names them) even when they are neither
-- the associated token account nor listed. The set cannot grow from outside: new
-- rows only come from accounts already followed.
SELECT DISTINCT token_account FROM payments
WHERE chain = $1 AND state IN ('observed', 'credited', 'claimed', 'held', 'rejected')
  AND token_account IS NOT NULL
ORDER BY token_account;

-- name: solana_get_account_owner
SELECT owner, slot, signature FROM solana_account_owners WHERE chain = $2 AND token_account = $1;

-- name: solana_set_account_owner
-- Written with the account's cursor: the owner after the cursor's transaction.
INSERT INTO solana_account_owners (token_account, owner, slot, signature, updated_at, chain)
VALUES ($1, $2, $3, $4, now(), $5)
ON CONFLICT (chain, token_account) DO UPDATE
    SET owner = excluded.owner, slot = excluded.slot, signature = excluded.signature,
        updated_at = now();

-- ---------------- ground truth for tests and the bench

-- name: solana_payments_summary
-- Ground truth for tests and the bench: every payment row of a Solana network ($1).
SELECT tx_hash, log_index, token_account, from_address, to_address, token, amount, state,
       memo, reference_keys, block_number, reason
FROM payments
WHERE chain = $1
ORDER BY block_number, tx_hash, log_index;
