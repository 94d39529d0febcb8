-- The x402 standard's `exact` scheme (api/x402_*.py): EVM EIP-3009 authorizations
-- and Solana settlements, each claimed before settling and consumed once.
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- EVM exact (EIP-3009 authorizations)

-- name: x402_claim_authorization
-- Claim the nonce before settling: no row back means it was used before (or a
-- concurrent request with the same authorization got here first).
INSERT INTO x402_authorizations (chain, asset, payer, pay_to, amount, nonce, valid_after,
                                 valid_before, signature, x402_version, resource, settled_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (chain, asset, payer, nonce) DO NOTHING
RETURNING id;

-- name: x402_mark_settling
-- The transaction hash is known (signed) before it is broadcast: a credit that
-- races our receipt still finds its authorization.
UPDATE x402_authorizations SET status = 'settling', tx_hash = $2, updated_at = now()
WHERE id = $1 AND status IN ('verified', 'settling');

-- name: x402_begin_settled
-- Settled: take the row to 'settled' (its lock held to commit); the payment is then
-- re-read and consumed in the same transaction (api/x402_settle.py mark_settled). No
-- row back: not ours to serve any more (already failed).
UPDATE x402_authorizations SET status = 'settled', tx_hash = $2, error = NULL, updated_at = now()
WHERE id = $1 AND status IN ('verified', 'settling')
RETURNING payment_id, chain, payer, pay_to, asset, amount;

-- name: x402_settled_payment
-- The follower's row for the settlement, read after the authorization's lock (a fresh
-- snapshot: a credit committed meanwhile is seen), locked until commit.
SELECT id, state FROM payments
WHERE id = $1
   OR (chain = $2 AND tx_hash = $3 AND from_address = $4 AND to_address = $5
       AND token = $6 AND amount = $7)
ORDER BY (id = $1) DESC NULLS LAST
LIMIT 1
FOR UPDATE;

-- name: x402_mark_failed
UPDATE x402_authorizations SET status = 'failed', error = $2, updated_at = now()
WHERE id = $1 AND status IN ('verified', 'settling');

-- name: x402_authorization
SELECT * FROM x402_authorizations WHERE id = $1;

-- name: x402_nonce_seen
-- A fast refusal for a replay before any RPC call; the INSERT above is the real guard.
SELECT id FROM x402_authorizations WHERE chain = $1 AND asset = $2 AND payer = $3 AND nonce = $4;

-- ---------------- Solana exact

-- name: x402_svm_nonce_seen
-- A fast refusal for a replay before any RPC call; the INSERT below is the real guard.
SELECT id FROM x402_solana_settlements
WHERE (mint = $1 AND payer = $2 AND nonce = $3) OR message_hash = $4
LIMIT 1;

-- name: x402_svm_lock_source
-- Taken in the claiming transaction: one claim at a time per source token account.
SELECT pg_advisory_xact_lock(hashtextextended('x402-svm:' || $1, 0));

-- name: x402_svm_source_busy
-- Why this source may not pay now: a settlement in flight (its blockhash still young),
-- or one that failed on chain within the hour (we paid its fee).
SELECT CASE WHEN bool_or(status = 'settling' AND created_at > now() - interval '2 minutes')
            THEN 'settling'
            WHEN bool_or(failed_on_chain AND updated_at > now() - interval '1 hour')
            THEN 'failed_on_chain' END
FROM x402_solana_settlements WHERE source = $1 AND created_at > now() - interval '1 hour';

-- name: x402_svm_claim
-- Claim the nonce, message and transaction id before broadcasting: no row back means
-- a replay, or a concurrent request with the same transaction got here first.
INSERT INTO x402_solana_settlements (network, mint, payer, source, pay_to, destination, amount,
                                     nonce, message_hash, signature, fee_payer, x402_version,
                                     resource)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: x402_svm_begin_settled
-- Confirmed without error: take the row to 'settled' (its lock held to commit). No row
-- back: not ours to serve any more (failed meanwhile).
UPDATE x402_solana_settlements SET status = 'settled', error = NULL, updated_at = now()
WHERE id = $1 AND status = 'settling'
RETURNING payment_id, signature, destination, pay_to, mint, amount;

-- name: x402_svm_settled_payment
-- The follower's row for the settlement, read after the settlement's lock (a fresh
-- snapshot: a credit committed meanwhile is seen), locked until commit.
SELECT id, state FROM payments
WHERE id = $1
   OR (family = 'solana' AND tx_hash = $2 AND token_account = $3 AND to_address = $4
       AND token = $5 AND amount = $6)
ORDER BY (id = $1) DESC NULLS LAST
LIMIT 1
FOR UPDATE;

-- name: x402_svm_mark_failed
UPDATE x402_solana_settlements
SET status = 'failed', error = $2, failed_on_chain = $3, updated_at = now()
WHERE id = $1 AND status = 'settling';

-- name: x402_svm_settlement
SELECT * FROM x402_solana_settlements WHERE id = $1;
