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
-- The row back: it was open and is failed now (records.mark_failed writes its event).
UPDATE x402_authorizations SET status = 'failed', error = $2, updated_at = now()
WHERE id = $1 AND status IN ('verified', 'settling')
RETURNING id;

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
-- The row back: it was settling and is failed now (records.mark_failed writes its event).
UPDATE x402_solana_settlements
SET status = 'failed', error = $2, failed_on_chain = $3, updated_at = now()
WHERE id = $1 AND status = 'settling'
RETURNING id;

-- name: x402_svm_settlement
SELECT * FROM x402_solana_settlements WHERE id = $1;

-- ---------------- The relayer's account nonces (api/x402/nonces.py)

-- name: relayer_nonce_lock
-- Lock the relayer's row (created at the chain's pending count the first time) until
-- commit; the value back is the lowest nonce never handed out.
INSERT INTO relayer_nonces (chain, address, next_nonce) VALUES ($1, $2, $3)
ON CONFLICT (chain, address) DO UPDATE SET updated_at = now()
RETURNING next_nonce;

-- name: relayer_nonce_reusable
-- The lowest nonce handed out before, at or above the chain's pending count ($3) and
-- below the next one ($4), whose transaction the node refused and that nothing live holds.
SELECT min(t.nonce) FROM relayer_transactions t
WHERE t.chain = $1 AND t.address = $2 AND t.nonce >= $3 AND t.nonce < $4
  AND t.status = 'refused'
  AND NOT EXISTS (SELECT 1 FROM relayer_transactions l
                  WHERE l.chain = t.chain AND l.address = t.address AND l.nonce = t.nonce
                    AND l.status = 'signed');

-- name: relayer_nonce_advance
UPDATE relayer_nonces SET next_nonce = $3, updated_at = now() WHERE chain = $1 AND address = $2;

-- name: relayer_tx_insert
-- Stored before it is broadcast: any process can re-send these bytes if the node lost them.
INSERT INTO relayer_transactions (chain, address, nonce, tx_hash, raw_tx, authorization_id)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: relayer_tx_unconfirmed
-- Live transactions the node may have lost (their nonce at or above its pending count $3),
-- signed more than $4 seconds ago (a younger one may still be on its way), lowest first.
SELECT nonce, tx_hash, raw_tx FROM relayer_transactions
WHERE chain = $1 AND address = $2 AND status = 'signed' AND nonce >= $3
  AND created_at < now() - make_interval(secs => $4)
ORDER BY nonce
LIMIT $5;

-- name: relayer_tx_refused
-- The node refused it for good: its nonce may be handed out again.
UPDATE relayer_transactions SET status = 'refused', updated_at = now()
WHERE tx_hash = $1 AND status = 'signed';

-- name: relayer_tx_replace
-- Its nonce is handed out again (only a refused one is): keep it for the record.
UPDATE relayer_transactions SET status = 'replaced', updated_at = now()
WHERE chain = $1 AND address = $2 AND nonce = $3 AND status = 'refused';
