-- Refunds (watcher/refunds/, docs/holds-and-refunds.md "Refunds").


-- name: refund_by_key
SELECT r.*, p.tx_hash AS payment_tx_hash, p.log_index AS payment_log_index
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.refund_key = $1;

-- name: refund_by_id
SELECT r.*, p.tx_hash AS payment_tx_hash, p.log_index AS payment_log_index
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.id = $1;

-- name: refund_list
-- $1 status (NULL = any), $2 chain (NULL = any), $3 limit. Newest first.
SELECT r.*, p.tx_hash AS payment_tx_hash, p.log_index AS payment_log_index
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE ($1::text IS NULL OR r.status = $1) AND ($2::text IS NULL OR r.chain = $2)
ORDER BY r.id DESC LIMIT $3;

-- name: refund_lock_payment
-- The payment and what it bought, locked: a racing claim, charge or refund waits.
SELECT p.id, p.chain, p.family, p.state, p.amount, p.token, p.from_address, p.tx_hash,
       p.log_index, p.invoice_id, p.reorged_after_credit,
       i.amount AS invoice_amount, i.claim_secret_hash,
       -- an x402 settlement of it (settling: its call is being served) consumes it
       EXISTS (SELECT 1 FROM x402_authorizations a
               WHERE a.payment_id = p.id AND a.status IN ('settling', 'settled'))
       OR EXISTS (SELECT 1 FROM x402_solana_settlements s
                  WHERE s.payment_id = p.id AND s.status IN ('settling', 'settled'))
           AS x402_linked
FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id
WHERE p.id = $1
FOR UPDATE OF p;

-- name: refund_lock_token
SELECT id, requests_total, remaining FROM access_tokens WHERE payment_id = $1 FOR UPDATE;

-- name: refund_totals
-- What earlier refunds of a payment took: money (all but a failed refund known to have
-- moved nothing: one marked failed for a nonce another transaction took, with no receipt
-- seen, may still have landed) and the calls taken from its token (all of them: a
-- failed refund's calls stay void).
SELECT coalesce(sum(amount) FILTER (
           WHERE status <> 'failed' OR detail->>'moved_nothing' IS DISTINCT FROM 'true'),
           0) AS refunded,
       coalesce(sum(calls) FILTER (WHERE token_id IS NOT NULL), 0)::int AS token_calls
FROM refunds WHERE payment_id = $1;

-- name: refund_shrink_token
UPDATE access_tokens SET remaining = remaining - $2
WHERE id = $1 AND remaining >= $2
RETURNING id, remaining;

-- name: refund_insert
INSERT INTO refunds (refund_key, payment_id, chain, kind, amount, calls, token_id, token,
                     destination, proof, reason, requested_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (refund_key) DO NOTHING
RETURNING id;

-- name: refund_audit
INSERT INTO admin_audit (action, payment_id, subject, reason, detail, client, operator)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)
RETURNING id, at;

-- name: refund_event_body
-- A refund as events and the API describe it.
SELECT jsonb_build_object(
    'refund_key', r.refund_key, 'payment_id', r.payment_id, 'chain', r.chain,
    'kind', r.kind, 'amount', r.amount::text, 'calls', r.calls, 'token', r.token,
    'destination', r.destination, 'proof', r.proof, 'status', r.status,
    'wallet', r.wallet, 'tx_hash', r.tx_hash, 'out_tx_hash', r.out_tx_hash,
    'out_block_number', r.out_block_number, 'failure', r.failure,
    'requested_by', r.requested_by, 'created_at', r.created_at,
    'confirmed_at', r.confirmed_at)::text
FROM refunds r WHERE r.id = $1;

-- ---- the sender ----------------------------------------------------------------------

-- name: refund_due
-- Refunds of a chain the sender must act on: requested ones to sign, signed or sent
-- ones to re-check (oldest first, bounded).
SELECT id, status FROM refunds
WHERE chain = $1 AND status = ANY($2::text[])
ORDER BY id LIMIT $3;

-- name: refund_lock_requested
SELECT * FROM refunds WHERE id = $1 AND status = 'requested' FOR UPDATE SKIP LOCKED;

-- name: refund_next_nonce
-- The wallet's next nonce as our own records see it (every refund that ever took one).
SELECT coalesce(max(nonce) + 1, 0) FROM refunds WHERE chain = $1 AND wallet = $2;

-- name: refund_payment_standing
-- The payment of a refund about to be signed or exported, share-locked until the
-- signer's transaction ends (a reorg flag, an invalidation or a claim waits, then sees
-- the refund signed): whether it still holds money of ours to give back.
SELECT p.id, p.state, p.reorged_after_credit
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.id = $1
FOR SHARE OF p;

-- name: refund_wallet_lock
-- One signer per (chain, wallet) at a time across processes (daemon and CLI).
SELECT pg_advisory_xact_lock(hashtextextended('refund-wallet:' || $1 || ':' || $2, 0));

-- name: refund_mark_signed
UPDATE refunds SET status = 'signed', wallet = $2, nonce = $3, raw_tx = $4, tx_hash = $5,
                   detail = $6::jsonb, signed_at = now(), last_error = NULL, updated_at = now()
WHERE id = $1 AND status = 'requested'
RETURNING id;

-- name: refund_mark_sent
UPDATE refunds SET status = 'sent', sent_at = coalesce(sent_at, now()), last_error = NULL,
                   updated_at = now()
WHERE id = $1 AND status = 'signed'
RETURNING id;

-- name: refund_mark_failed
-- $3: the refund is known to have moved nothing (never signed, or its receipt reverted):
-- only then is its amount refundable again (refund_totals).
UPDATE refunds SET status = 'failed', failure = $2, failed_at = now(), updated_at = now(),
                   detail = CASE WHEN $3::boolean
                                 THEN coalesce(detail, '{}'::jsonb) || '{"moved_nothing": true}'
                                 ELSE detail END
WHERE id = $1 AND status IN ('requested', 'signed', 'sent', 'exported')
RETURNING id;

-- name: refund_note_error
UPDATE refunds SET last_error = $2, updated_at = now() WHERE id = $1;

-- name: refund_mark_exported
UPDATE refunds SET status = 'exported', wallet = $2, exported_at = coalesce(exported_at, now()),
                   nonce = coalesce(nonce, $3::bigint), updated_at = now()
WHERE id = $1 AND status IN ('requested', 'exported')
RETURNING id;

-- ---- the followers' hook ---------------------------------------------------------------

-- name: refund_link_by_tx
-- An outgoing transfer of a refund we signed: same transaction, same destination and amount.
UPDATE refunds SET out_tx_hash = $2, out_log_index = $3, out_block_number = $4,
                   out_block_hash = $5,
                   status = CASE WHEN status IN ('signed', 'failed') THEN 'sent' ELSE status END,
                   failure = CASE WHEN status = 'failed'
                                  THEN 'landed after it was marked failed: ' || failure END,
                   sent_at = coalesce(sent_at, now()), updated_at = now()
WHERE chain = $1 AND tx_hash = $2 AND destination = $6 AND amount = $7 AND token = $8
  AND wallet = $9 AND status IN ('signed', 'sent', 'failed') AND out_tx_hash IS NULL
RETURNING id;

-- name: refund_link_exported
-- An outgoing transfer from the export wallet: the oldest exported refund it pays exactly.
UPDATE refunds SET out_tx_hash = $2, out_log_index = $3, out_block_number = $4,
                   out_block_hash = $5, tx_hash = coalesce(tx_hash, $2), updated_at = now()
WHERE id = (SELECT id FROM refunds
            WHERE chain = $1 AND status = 'exported' AND out_tx_hash IS NULL
              AND destination = $6 AND amount = $7 AND token = $8 AND wallet = $9
            ORDER BY id LIMIT 1 FOR UPDATE)
  -- A transfer already linked (seen again: a restart re-scans a range before it is
  -- deep) pays no second refund, and must not stop the follower's commit.
  AND NOT EXISTS (SELECT 1 FROM refunds o
                  WHERE o.chain = $1 AND (o.tx_hash = $2
                                          OR (o.out_tx_hash = $2 AND o.out_log_index = $3)))
RETURNING id;

-- name: refund_confirm_deep
-- Linked refunds whose outgoing transfer is now deep: confirmed.
UPDATE refunds SET status = 'confirmed', confirmed_at = now(), updated_at = now()
WHERE chain = $1 AND status IN ('sent', 'exported', 'signed')
  AND out_block_number IS NOT NULL AND out_block_number <= $2
RETURNING id;

-- name: refund_forget_above
-- A rewind: links above the fork point are gone; confirmed refunds wait again.
UPDATE refunds SET out_tx_hash = NULL, out_log_index = NULL, out_block_number = NULL,
                   out_block_hash = NULL, confirmed_at = NULL,
                   status = CASE WHEN status = 'confirmed' AND raw_tx IS NOT NULL THEN 'sent'
                                 WHEN status = 'confirmed' THEN 'exported'
                                 ELSE status END,
                   tx_hash = CASE WHEN raw_tx IS NULL THEN NULL ELSE tx_hash END,
                   updated_at = now()
WHERE chain = $1 AND out_block_number > $2
RETURNING id, status;

-- name: refund_payment
-- The payment a refund is asked for (not locked: read before the request's transaction).
SELECT p.id, p.chain, p.family, p.state, p.amount, p.from_address, p.tx_hash, p.log_index,
       i.claim_secret_hash
FROM payments p LEFT JOIN invoices i ON i.id = p.invoice_id
WHERE p.id = $1;

-- name: refund_candidates
-- Payments an operator may want to refund, each with why, the kind that fits and the
-- amount: rejected holds; over-payments (above the invoice's amount by more than $1
-- base units: the EVM invoice's own 1-9,999 units of jitter are part of its amount);
-- a second payment matching an invoice another payment already paid; a payment for an
-- invoice that expired, credited and not claimed for longer than the claim window ($3).
-- $2 price per call, $4 limit, $5 refundable states.
WITH base AS (
    SELECT p.id, p.chain, p.amount, p.state, p.from_address, p.to_address, p.tx_hash,
           p.invoice_id, p.credited_at, p.observed_at, p.reference_keys,
           i.amount AS invoice_amount, i.expires_at,
           coalesce(r.refunded, 0) AS refunded,
           coalesce((t.requests_total - t.remaining - coalesce(r.token_calls, 0)) * $2, 0)
               AS consumed
    FROM payments p
    LEFT JOIN invoices i ON i.id = p.invoice_id
    LEFT JOIN access_tokens t ON t.payment_id = p.id
    LEFT JOIN LATERAL (
        SELECT sum(amount) FILTER (WHERE status <> 'failed'
                                     OR detail->>'moved_nothing' IS DISTINCT FROM 'true')
                   AS refunded,
               sum(calls) FILTER (WHERE token_id IS NOT NULL) AS token_calls
        FROM refunds WHERE payment_id = p.id) r ON true
    WHERE p.state = ANY($5::text[]) AND NOT p.reorged_after_credit
      -- consumed by the x402 call it paid for (claimed without a token, or linked to a
      -- settling or settled settlement): nothing to give
      AND NOT (p.state = 'claimed' AND t.id IS NULL)
      AND NOT EXISTS (SELECT 1 FROM x402_authorizations a
                      WHERE a.payment_id = p.id AND a.status IN ('settling', 'settled'))
      AND NOT EXISTS (SELECT 1 FROM x402_solana_settlements s
                      WHERE s.payment_id = p.id AND s.status IN ('settling', 'settled'))
), why AS (
    SELECT b.*, 'rejected_hold' AS why, 'whole' AS kind, b.amount AS wanted
    FROM base b WHERE b.state = 'rejected'
    UNION ALL
    SELECT b.*, 'over_payment', 'excess', b.amount - b.invoice_amount
    FROM base b WHERE b.invoice_amount IS NOT NULL AND b.amount - b.invoice_amount > $1
    UNION ALL
    SELECT b.*, 'second_payment', 'whole', b.amount
    FROM base b
    WHERE b.invoice_id IS NULL AND b.state <> 'rejected' AND EXISTS (
        SELECT 1 FROM invoices i2 JOIN payments p2 ON p2.invoice_id = i2.id
        WHERE i2.chain = b.chain AND p2.id <> b.id AND i2.created_at <= b.observed_at
          AND ((i2.pay_to = b.to_address AND i2.amount = b.amount)
               OR i2.reference = ANY(b.reference_keys)))
    UNION ALL
    SELECT b.*, 'expired_unclaimed', 'whole', b.amount
    FROM base b
    WHERE b.state = 'credited' AND b.invoice_id IS NOT NULL AND b.expires_at < now()
      AND b.credited_at < now() - $3::interval
)
SELECT id AS payment_id, chain, state, from_address, tx_hash, invoice_id, why, kind,
       amount::text AS amount,
       least(wanted, amount - refunded - consumed)::text AS refundable
FROM why
WHERE least(wanted, amount - refunded - consumed) > 0
ORDER BY id, why
LIMIT $4;

-- name: explain_refunds
-- `watcher explain`: the refunds of a payment ($2) and the refund a transaction of ours is
-- ($3: the transaction explained, on chain $1), oldest first.
SELECT r.id, r.refund_key, r.payment_id, r.amount, r.destination, r.status, r.requested_by,
       coalesce(r.out_tx_hash, r.tx_hash) AS tx_hash, r.out_block_number, r.failure,
       p.tx_hash AS payment_tx_hash
FROM refunds r JOIN payments p ON p.id = r.payment_id
WHERE r.chain = $1
  AND (r.payment_id = $2 OR r.out_tx_hash = $3 OR r.tx_hash = $3)
ORDER BY r.id;
