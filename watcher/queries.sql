-- Every SQL statement the watcher and the API run, each under a `-- name: x`
-- header. Load them with watcher.db.queries(); never inline SQL elsewhere.

-- ---------------------------------------------------------------- migrations

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
-- Blocks until no other process is migrating; released at session end.
SELECT pg_advisory_lock($1::bigint);

-- name: unlock_migrations
SELECT pg_advisory_unlock($1::bigint);

-- name: applied_migrations
SELECT version, checksum FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2);

-- ---------------------------------------------------------------- health

-- name: ping
SELECT 1;

-- name: schema_migrations_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- ---------------------------------------------------------------- ledger (both chain families)

-- name: record_transfers
-- Insert transfers seen on chain, one row per (chain, tx_hash, transfer_key): the
-- transfer's identity, which survives a reorg that re-includes its transaction at
-- another block or log index (migration 0010). A row seen again is left alone,
-- except:
--   * an orphaned (or still observed) row that reappears in another block: it is
--     observed again at its new place;
--   * a credited row seen in a block other than the one it was credited in, or one
--     flagged reorged_after_credit seen again: it keeps its state (and the token it
--     bought), records the new place and stays flagged until that place is confirmed
--     (evm_relanded_ids, ledger.clear_reorg_flags).
-- Returns the rows inserted or revived as observed / below_minimum (never credited ones).
WITH up AS (
    INSERT INTO payments AS p (chain, tx_hash, log_index, transfer_key, block_number,
                               block_hash, block_time, token, from_address, to_address,
                               token_account, amount, state, reason, memo, reference_keys)
    SELECT t.chain, t.tx_hash, t.log_index, t.transfer_key, t.block_number, t.block_hash,
           t.block_time, t.token, t.from_address, t.to_address, t.token_account, t.amount,
           t.state, t.reason, t.memo, r.reference_keys
    FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::timestamptz[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[], $12::text[],
                $13::text[], $14::text[], $15::text[], $16::text[])
         AS t (chain, tx_hash, log_index, block_number, block_hash, block_time, token,
               from_address, to_address, token_account, amount, state, reason, memo, refs_csv,
               transfer_key)
    CROSS JOIN LATERAL (SELECT CASE WHEN t.refs_csv IS NULL OR t.refs_csv = '' THEN '{}'::text[]
                                    ELSE string_to_array(t.refs_csv, ',') END AS reference_keys) r
    ON CONFLICT (chain, tx_hash, transfer_key) DO UPDATE
        SET log_index = excluded.log_index,
            block_number = excluded.block_number,
            block_hash = excluded.block_hash,
            block_time = excluded.block_time,
            state = CASE WHEN p.state IN ('credited', 'claimed') THEN p.state
                         WHEN excluded.state = 'below_minimum' THEN 'below_minimum'
                         ELSE 'observed' END,
            reason = CASE WHEN p.state IN ('credited', 'claimed')
                          THEN 're-included in block ' || excluded.block_number
                               || ' after a reorg: suspended until it is confirmed there'
                          ELSE excluded.reason END,
            reorged_after_credit = p.reorged_after_credit OR p.state IN ('credited', 'claimed'),
            relanded_at = CASE WHEN p.state IN ('credited', 'claimed') THEN now()
                               ELSE p.relanded_at END,
            orphaned_at = NULL,
            updated_at = now()
        WHERE p.state = 'orphaned'
           OR (p.state IN ('observed', 'below_minimum')
               AND p.block_hash IS DISTINCT FROM excluded.block_hash)
           OR (p.state IN ('credited', 'claimed')
               AND (p.reorged_after_credit OR p.block_hash IS DISTINCT FROM excluded.block_hash))
    RETURNING p.id, p.chain, p.state, p.amount
)
SELECT id, chain, state, amount FROM up WHERE state NOT IN ('credited', 'claimed');

-- name: credit_payments
-- observed -> credited for the given ids (only rows still observed).
UPDATE payments
SET state = 'credited', credited_at = now(), updated_at = now(), reason = NULL
WHERE id = ANY($1::bigint[]) AND state = 'observed'
RETURNING id, chain, amount, block_number, invoice_id;

-- name: orphan_payments
-- observed (or below_minimum) -> orphaned: the block left the canonical chain or never
-- finalized. A re-scan that finds the transfer again records it afresh at its new place.
UPDATE payments
SET state = 'orphaned', orphaned_at = now(), updated_at = now(), reason = $2
WHERE id = ANY($1::bigint[]) AND state IN ('observed', 'below_minimum')
RETURNING id, chain, amount;

-- name: flag_reorged_credits
-- A credited payment whose block left the canonical chain: flag, never delete, and
-- suspend the token it bought (metering refuses it) until the transfer re-lands and
-- is confirmed. A row flagged before and re-landed since (relanded_at) whose new block
-- is gone too is flagged again.
WITH p AS (
    UPDATE payments
    SET reorged_after_credit = true, relanded_at = NULL, updated_at = now(), reason = $2
    WHERE id = ANY($1::bigint[]) AND state IN ('credited', 'claimed')
      AND (NOT reorged_after_credit OR relanded_at IS NOT NULL)
    RETURNING id, chain, amount, tx_hash
), t AS (
    UPDATE access_tokens a SET suspended_reason = $3
    FROM p WHERE a.payment_id = p.id
    RETURNING a.id, a.payment_id
)
SELECT p.id, p.chain, p.amount, p.tx_hash, t.id AS token_id
FROM p LEFT JOIN t ON t.payment_id = p.id;

-- name: clear_reorg_flags
-- A flagged payment re-landed and is now confirmed at its new place: the flag goes,
-- and the token it bought is served again.
WITH p AS (
    UPDATE payments
    SET reorged_after_credit = false, updated_at = now(),
        reason = 're-included in block ' || block_number || ' after a reorg, confirmed there'
    WHERE id = ANY($1::bigint[]) AND reorged_after_credit AND relanded_at IS NOT NULL
      AND state IN ('credited', 'claimed')
    RETURNING id, chain, amount, tx_hash, block_number
), t AS (
    UPDATE access_tokens a SET suspended_reason = NULL
    FROM p WHERE a.payment_id = p.id
    RETURNING a.id, a.payment_id
)
SELECT p.id, p.chain, p.amount, p.tx_hash, p.block_number, t.id AS token_id
FROM p LEFT JOIN t ON t.payment_id = p.id;

-- name: get_cursor
SELECT num, hash, head FROM cursors WHERE chain = $1 AND stream = $2;

-- name: set_cursor
INSERT INTO cursors (chain, stream, num, hash, head, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (chain, stream) DO UPDATE
    SET num = excluded.num, hash = excluded.hash,
        head = coalesce(excluded.head, cursors.head), updated_at = now();

-- name: payments_by_tx
SELECT * FROM payments WHERE chain = $1 AND tx_hash = $2 ORDER BY log_index;

-- name: record_credited_transfers
-- Transfers already `confirmations` deep in blocks this step verified (ledger.record_credited):
-- written straight as credited, which spares rewriting every row of a large backfill.
-- A row seen before as observed or orphaned is credited at this (canonical) place.
-- A credited row seen at another place, or flagged reorged_after_credit, keeps its
-- state and moves here (relanded_at; the flag is cleared by the same step's
-- evm_relanded_ids). Returns only the rows credited here for the first time.
WITH up AS (
    INSERT INTO payments AS p (chain, tx_hash, log_index, transfer_key, block_number,
                               block_hash, block_time, token, from_address, to_address, amount,
                               state, credited_at)
    SELECT t.chain, t.tx_hash, t.log_index, t.transfer_key, t.block_number, t.block_hash,
           t.block_time, t.token, t.from_address, t.to_address, t.amount, 'credited', now()
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[],
                $7::timestamptz[], $8::text[], $9::text[], $10::numeric[], $11::text[])
         AS t (chain, token, tx_hash, log_index, block_number, block_hash, block_time,
               from_address, to_address, amount, transfer_key)
    ON CONFLICT (chain, tx_hash, transfer_key) DO UPDATE
        SET state = CASE WHEN p.state IN ('credited', 'claimed') THEN p.state
                         ELSE 'credited' END,
            credited_at = CASE WHEN p.state IN ('credited', 'claimed') THEN p.credited_at
                               ELSE now() END,
            log_index = excluded.log_index,
            block_number = excluded.block_number,
            block_hash = excluded.block_hash,
            block_time = excluded.block_time,
            reason = CASE WHEN p.state IN ('credited', 'claimed')
                          THEN 're-included in block ' || excluded.block_number
                               || ' after a reorg: suspended until it is confirmed there'
                          END,
            reorged_after_credit = p.reorged_after_credit OR p.state IN ('credited', 'claimed'),
            relanded_at = CASE WHEN p.state IN ('credited', 'claimed') THEN now()
                               ELSE p.relanded_at END,
            orphaned_at = NULL,
            updated_at = now()
        WHERE p.state IN ('observed', 'orphaned')
           OR (p.state IN ('credited', 'claimed')
               AND (p.reorged_after_credit OR p.block_hash IS DISTINCT FROM excluded.block_hash))
    RETURNING p.id, p.chain, p.amount, p.block_number, p.relanded_at
)
SELECT id, chain, amount, block_number FROM up WHERE relanded_at IS NULL;

-- name: link_x402_credits
-- Run by the ledger after every credit (follower, backfill, operator) in that
-- transaction; until the one credit path, triggers of 0008/0009 did it. A credited
-- payment that is the transfer of an x402 settlement we made is linked to it, and
-- when the call was served (settled) the payment is consumed at once: claimed, so the
-- same transfer can never also buy an access token. Still 'settling' (our receipt on
-- its way, or the API died before serving): linked, left credited; marking the row
-- settled then claims it (claim_served). A 'reorged' row whose transfer is credited
-- again counts as settled again. EVM authorizations match on the transaction, payer,
-- recipient, token and amount; Solana settlements on the signature, our token
-- account, owner, mint and amount (not the payer: the follower records the owner
-- whose balance went down, not a delegate that signed).
WITH p AS (
    SELECT id, chain, tx_hash, from_address, to_address, token, token_account, amount
    FROM payments WHERE id = ANY ($1::bigint[]) AND state = 'credited'
), evm AS (
    UPDATE x402_authorizations a
    SET payment_id = p.id, updated_at = now(),
        status = CASE a.status WHEN 'reorged' THEN 'settled' ELSE a.status END,
        error = CASE a.status WHEN 'reorged' THEN NULL ELSE a.error END
    FROM p
    WHERE a.chain = p.chain AND a.tx_hash = p.tx_hash AND a.payer = p.from_address
      AND a.pay_to = p.to_address AND a.asset = p.token AND a.amount = p.amount
      AND a.status IN ('settling', 'settled', 'reorged')
      AND (a.payment_id IS NULL OR a.payment_id = p.id)
    RETURNING p.id AS payment_id, a.status,
              'x402 authorization ' || a.id || ': the call was served at settlement' AS reason
), svm AS (
    UPDATE x402_solana_settlements s
    SET payment_id = p.id, updated_at = now(),
        status = CASE s.status WHEN 'reorged' THEN 'settled' ELSE s.status END,
        error = CASE s.status WHEN 'reorged' THEN NULL ELSE s.error END
    FROM p
    WHERE s.signature = p.tx_hash AND s.destination = p.token_account
      AND s.pay_to = p.to_address AND s.mint = p.token AND s.amount = p.amount
      AND s.status IN ('settling', 'settled', 'reorged')
      AND (s.payment_id IS NULL OR s.payment_id = p.id)
    RETURNING p.id AS payment_id, s.status,
              'x402 solana settlement ' || s.id || ': the call was served at settlement' AS reason
), served AS (
    SELECT payment_id, reason FROM evm WHERE status = 'settled'
    UNION ALL
    SELECT payment_id, reason FROM svm WHERE status = 'settled'
)
UPDATE payments SET state = 'claimed', reason = served.reason, updated_at = now()
FROM served WHERE payments.id = served.payment_id
RETURNING payments.id;

-- name: mark_x402_orphaned
-- Run by ledger.orphan in that transaction (a trigger of 0008/0009 until the one credit
-- path): the x402 settlement whose transaction left the canonical chain is never
-- counted as paid. EVM: settling or settled authorizations; Solana: settled rows only
-- (one still settling is the API's to decide: it may yet confirm on the new fork).
WITH p AS (
    SELECT id, chain, tx_hash FROM payments WHERE id = ANY ($1::bigint[]) AND state = 'orphaned'
), evm AS (
    UPDATE x402_authorizations a
    SET status = 'reorged', updated_at = now(),
        error = 'settlement transaction left the canonical chain (payment ' || p.id || ')'
    FROM p
    WHERE a.chain = p.chain AND a.tx_hash = p.tx_hash AND a.status IN ('settling', 'settled')
    RETURNING a.id
)
UPDATE x402_solana_settlements s
SET status = 'reorged', updated_at = now(),
    error = 'settlement transaction was dropped with its fork (payment ' || p.id || ')'
FROM p
WHERE s.signature = p.tx_hash AND s.status = 'settled';

-- ---- api (issue 5): invoices, claims, metering, rate limits, admin

-- name: link_invoices
-- Run by ledger.credit in the follower's transaction: link freshly credited
-- payments to the open (or lately expired) invoice they pay, and mark it
-- credited. EVM: same chain, recipient, token and exact amount. Solana: the
-- invoice's reference among the payment's reference keys, same mint and
-- recipient, at least the invoice amount (references are public: dust with a
-- reference must not take the invoice). Either way the payment's time must
-- fall within [created_at, expires_at + grace]. One payment per invoice.
-- Two equality joins (not one OR) so a 1e5-row backfill credit stays cheap.
WITH credited AS (
    SELECT p.id, p.chain, p.to_address, p.token, p.amount, p.reference_keys,
           coalesce(p.block_time, p.observed_at) AS paid_at
    FROM payments p
    WHERE p.id = ANY ($1::bigint[]) AND p.state = 'credited' AND p.invoice_id IS NULL
), candidates AS (
    SELECT c.id AS payment_id, i.id AS invoice_id, i.created_at
    FROM credited c
    JOIN invoices i
      ON i.chain = c.chain AND i.pay_to = c.to_address AND i.amount = c.amount
     AND i.token = c.token
    WHERE c.chain <> 'solana' AND i.status IN ('open', 'expired')
      AND c.paid_at >= date_trunc('second', i.created_at)
      AND c.paid_at <= i.expires_at + $2::interval
      -- In doubt, neither: another invoice with this amount could still be what the
      -- payer meant (paid late, or paid twice, within the amount hold $3). The hold
      -- makes this impossible for amounts handed out since 0011; it guards the rest.
      AND NOT EXISTS (SELECT 1 FROM invoices o
                      WHERE o.chain = i.chain AND o.amount = i.amount AND o.id <> i.id
                        AND o.reference IS NULL
                        AND o.created_at <= c.paid_at
                        AND o.expires_at + $3::interval >= c.paid_at)
    UNION ALL
    SELECT c.id, i.id, i.created_at
    FROM credited c
    CROSS JOIN LATERAL unnest(c.reference_keys) AS r (key)
    JOIN invoices i ON i.reference = r.key
    WHERE c.chain = 'solana' AND i.chain = 'solana' AND i.status IN ('open', 'expired')
      AND i.pay_to = c.to_address AND i.token = c.token AND c.amount >= i.amount
      AND c.paid_at >= date_trunc('second', i.created_at)
      AND c.paid_at <= i.expires_at + $2::interval
), pick AS (
    SELECT DISTINCT ON (payment_id) payment_id, invoice_id
    FROM candidates c
    WHERE NOT EXISTS (SELECT 1 FROM payments o WHERE o.invoice_id = c.invoice_id)
    ORDER BY payment_id, created_at
), one AS (
    SELECT DISTINCT ON (invoice_id) payment_id, invoice_id
    FROM pick ORDER BY invoice_id, payment_id
), linked AS (
    UPDATE payments p SET invoice_id = one.invoice_id, updated_at = now()
    FROM one WHERE p.id = one.payment_id
    RETURNING p.id, p.invoice_id
)
UPDATE invoices i SET status = 'credited'
FROM linked WHERE i.id = linked.invoice_id
RETURNING i.id AS invoice_id, linked.id AS payment_id;

-- name: api_chain_status
-- Per chain: best head seen, slowest stream's cursor, and how long since it moved.
SELECT chain, max(head) AS head, min(num) AS cursor,
       extract(epoch FROM now() - min(updated_at))::float8 AS age_seconds
FROM cursors GROUP BY chain;

-- name: api_payments_by_tx
SELECT p.id, p.chain, p.tx_hash, p.log_index, p.block_number, p.from_address, p.to_address,
       p.token, p.amount, p.state, p.reason, p.invoice_id, p.reorged_after_credit,
       p.relanded_at, t.id AS token_id,
       (SELECT max(c.head) FROM cursors c WHERE c.chain = p.chain) AS head
FROM payments p
LEFT JOIN access_tokens t ON t.payment_id = p.id
WHERE p.chain = $1 AND p.tx_hash = $2
ORDER BY p.log_index;

-- name: api_claim_payment
-- One credited payment -> one token, in one statement (atomic, one round trip):
-- lock the payment, insert the token (the unique payment_id is the backstop),
-- then mark the payment and its invoice claimed. No row: nothing was issued
-- (see api_claim_refusal for why).
-- $1 token hash, $2 payment id, $3 price per call, $4 lifetime, $5 most requests.
WITH p AS (
    SELECT id, chain, tx_hash, from_address, amount, invoice_id
    FROM payments WHERE id = $2 AND state = 'credited' AND amount >= $3
      AND NOT reorged_after_credit  -- off the canonical chain: buys nothing (yet)
    FOR UPDATE  -- racing claims and admin marks wait, then see the new state
), t AS (
    INSERT INTO access_tokens (token_hash, payment_id, invoice_id, payer, requests_total,
                               remaining, expires_at)
    SELECT $1, p.id, p.invoice_id, p.from_address, r.n, r.n, now() + $4::interval
    FROM p CROSS JOIN LATERAL (SELECT least(floor(p.amount / $3), $5)::int AS n) r
    ON CONFLICT DO NOTHING
    RETURNING id, payment_id, requests_total, remaining, expires_at
), m AS (
    UPDATE payments SET state = 'claimed', updated_at = now()
    FROM t WHERE payments.id = t.payment_id
    RETURNING payments.invoice_id
), i AS (
    UPDATE invoices SET status = 'claimed'
    FROM m WHERE invoices.id = m.invoice_id AND invoices.status = 'credited'
)
SELECT t.id, t.requests_total, t.remaining, t.expires_at, p.chain, p.tx_hash
FROM t JOIN p ON p.id = t.payment_id;

-- name: api_claim_refusal
SELECT p.state, p.amount, p.reorged_after_credit, p.relanded_at, t.id AS token_id
FROM payments p LEFT JOIN access_tokens t ON t.payment_id = p.id
WHERE p.id = $1;

-- name: api_expire_invoices
SELECT cleanup_expired_x402_payments($1::interval);

-- name: api_insert_evm_invoice
-- A free amount: base + k micro-units for k in [1, $8], not held by another invoice
-- (invoice_amounts, migration 0011), the least recently used first. The hold runs
-- to the invoice's expiry plus $9. Two requests picking the same amount: the row
-- lock makes the second see it held, nothing is inserted, and the caller picks again.
WITH pick AS (
    SELECT gen_random_uuid() AS id, $4::numeric + k AS amount
    FROM generate_series(1, $8::int) AS k
    LEFT JOIN invoice_amounts r ON r.chain = $1 AND r.amount = $4::numeric + k
    WHERE r.reserved_until IS NULL OR r.reserved_until <= now()
    ORDER BY r.reserved_until NULLS FIRST, random()
    LIMIT 1
), held AS (
    INSERT INTO invoice_amounts AS r (chain, amount, invoice_id, reserved_until)
    SELECT $1, pick.amount, pick.id, now() + $7::interval + $9::interval FROM pick
    ON CONFLICT (chain, amount) DO UPDATE
        SET invoice_id = excluded.invoice_id, reserved_until = excluded.reserved_until
        WHERE r.reserved_until <= now()
    RETURNING r.invoice_id, r.amount
)
INSERT INTO invoices (id, chain, pay_to, token, amount, requests, claim_secret_hash, expires_at)
SELECT held.invoice_id, $1, $2, $3, held.amount, $5, $6, now() + $7::interval
FROM held
RETURNING id, chain, pay_to, token, amount, requests, reference, status, created_at, expires_at;

-- name: api_next_free_amount
-- When every amount is held: how long until the first one is free again (seconds).
SELECT greatest(1, ceil(extract(epoch FROM min(reserved_until) - now())))::int
FROM invoice_amounts
WHERE chain = $1 AND amount > $2::numeric AND amount <= $2::numeric + $3::int;

-- name: api_insert_solana_invoice
INSERT INTO invoices (chain, pay_to, token, amount, requests, reference, claim_secret_hash,
                      expires_at)
VALUES ('solana', $1, $2, $3, $4, $5, $6, now() + $7::interval)
RETURNING id, chain, pay_to, token, amount, requests, reference, status, created_at, expires_at;

-- name: api_invoice
SELECT i.id, i.chain, i.pay_to, i.token, i.amount, i.requests, i.reference, i.status,
       i.claim_secret_hash, i.created_at, i.expires_at, now() AS now,
       p.id AS payment_id, p.tx_hash, p.amount AS paid_amount, p.from_address, p.state AS payment_state,
       p.reorged_after_credit, p.reason AS payment_reason, t.id AS token_id, t.suspended_reason
FROM invoices i
LEFT JOIN payments p ON p.invoice_id = i.id
LEFT JOIN access_tokens t ON t.invoice_id = i.id
WHERE i.id = $1;

-- name: api_invoice_pending_payment
-- An observed (not yet confirmed) payment that will match the invoice once credited.
SELECT p.tx_hash, p.block_number, p.amount,
       (SELECT max(c.head) FROM cursors c WHERE c.chain = p.chain) AS head
FROM invoices i
JOIN payments p
  ON p.chain = i.chain AND p.to_address = i.pay_to AND p.token = i.token
 AND p.state = 'observed' AND p.invoice_id IS NULL
 AND coalesce(p.block_time, p.observed_at) >= date_trunc('second', i.created_at)
 AND coalesce(p.block_time, p.observed_at) <= i.expires_at + $2::interval
 AND ((p.chain <> 'solana' AND p.amount = i.amount)
      OR (p.chain = 'solana' AND i.reference = ANY (p.reference_keys) AND p.amount >= i.amount))
WHERE i.id = $1
ORDER BY p.id
LIMIT 1;

-- name: api_meter
-- One paid call: decrement only if enough remains and the token is alive, and
-- record the usage, in one statement (atomic; concurrent calls never overdraw).
WITH t AS (
    UPDATE access_tokens SET remaining = remaining - $2
    WHERE token_hash = $1 AND remaining >= $2 AND expires_at > now()
      AND suspended_reason IS NULL
    RETURNING id, remaining, expires_at
), u AS (
    INSERT INTO token_usage (token_id, endpoint, cost)
    SELECT id, $3, $2 FROM t
    RETURNING id
)
SELECT t.id AS token_id, t.remaining, t.expires_at, u.id AS usage_id FROM t, u;

-- name: api_meter_keyed
-- As api_meter, with an Idempotency-Key: the usage row starts 'running' with the
-- request's fingerprint ($5) and the key's end (now + $6, at most the token's end).
-- A concurrent twin with the same key makes the insert do nothing (usage_id
-- NULL): the caller rolls back and answers as for a replay.
WITH t AS (
    UPDATE access_tokens SET remaining = remaining - $2
    WHERE token_hash = $1 AND remaining >= $2 AND expires_at > now()
      AND suspended_reason IS NULL
    RETURNING id, remaining, expires_at
), u AS (
    INSERT INTO token_usage
        (token_id, endpoint, cost, idempotency_key, request_hash, replay_state, key_expires_at)
    SELECT id, $3, $2, $4, $5, 'running', least(now() + $6::interval, expires_at) FROM t
    ON CONFLICT (token_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT t.id AS token_id, t.remaining, t.expires_at, u.id AS usage_id
FROM t LEFT JOIN u ON true;

-- name: api_idem_lookup
-- The call already made under this token's Idempotency-Key, if any (a refunded
-- call released its key). $3: how long a 'running' call may take before it is
-- presumed lost.
SELECT u.id AS usage_id, u.endpoint, u.request_hash, u.replay_state, u.response_status,
       u.response_headers::text AS response_headers, u.response_body,
       u.key_expires_at <= now() AS key_expired,
       u.created_at < now() - $3::interval AS overdue
FROM access_tokens a
JOIN token_usage u ON u.token_id = a.id AND u.idempotency_key = $2
WHERE a.token_hash = $1
  AND a.suspended_reason IS NULL;  -- a suspended token is refused, replay or not

-- name: api_idem_forget
-- An expired key is forgotten (its stored answer dropped): the next call with it
-- is a new call, charged and run.
UPDATE token_usage
SET idempotency_key = NULL, response_headers = NULL, response_body = NULL
WHERE id = $1 AND key_expires_at <= now();

-- name: api_idem_finish
-- The keyed call answered: keep its answer ('stored') or say it cannot be replayed
-- ('unreplayable', status only). A refunded row is left alone.
UPDATE token_usage
SET replay_state = $2, response_status = $3, response_headers = $4::jsonb, response_body = $5
WHERE id = $1 AND replay_state = 'running' AND NOT refunded;

-- name: api_idem_prune
-- Cleanup: forget expired keys and drop their stored answers (the usage rows stay).
UPDATE token_usage
SET idempotency_key = NULL, response_headers = NULL, response_body = NULL
WHERE key_expires_at <= now() AND idempotency_key IS NOT NULL;

-- name: api_refund
-- The handler failed (5xx): give the unit back, once. The key is released so
-- a retry with it is charged (and served) normally.
WITH u AS (
    UPDATE token_usage SET refunded = true, status_code = $2, idempotency_key = NULL
    WHERE id = $1 AND NOT refunded
    RETURNING token_id, cost
)
UPDATE access_tokens a SET remaining = a.remaining + u.cost
FROM u WHERE a.id = u.token_id
RETURNING a.remaining;

-- name: api_token_status
SELECT id, requests_total, remaining, created_at, expires_at, expires_at > now() AS alive,
       suspended_reason
FROM access_tokens WHERE token_hash = $1;

-- name: api_rate_hit
-- One hit in the current one-minute window; returns the count so far.
INSERT INTO api_rate_limits AS r (bucket, client, window_start, hits)
VALUES ($1, $2, date_trunc('minute', now()), 1)
ON CONFLICT (bucket, client, window_start) DO UPDATE SET hits = r.hits + 1
RETURNING hits,
          greatest(1, ceil(extract(epoch FROM r.window_start + interval '1 minute' - now())))::int
              AS retry_after;

-- name: api_rate_prune
DELETE FROM api_rate_limits WHERE window_start < now() - interval '5 minutes';

-- name: api_admin_stats_24h
SELECT * FROM v_x402_stats_24h ORDER BY chain;

-- name: api_admin_top_payers
SELECT * FROM v_x402_top_payers LIMIT 10;

-- name: api_admin_endpoint_stats
SELECT * FROM v_x402_endpoint_stats ORDER BY calls DESC LIMIT 50;

-- name: api_admin_active_tokens
SELECT count(*) AS tokens, coalesce(sum(remaining), 0) AS requests_remaining
FROM v_x402_active_payments;

-- name: api_admin_settle
-- By hand: a payment the followers could not credit (still observed, orphaned,
-- below minimum, invalidated) is credited.
UPDATE payments
SET state = 'credited', credited_at = coalesce(credited_at, now()), updated_at = now(),
    reason = $2
WHERE id = $1 AND state IN ('observed', 'orphaned', 'below_minimum', 'not_ours')
RETURNING id, chain, amount;

-- name: api_admin_invalidate
-- By hand: a payment that must not buy calls. 'not_ours' is never revived or
-- credited by a follower; a token it already bought is emptied.
WITH p AS (
    UPDATE payments SET state = 'not_ours', updated_at = now(), reason = $2
    WHERE id = $1 AND state IN ('observed', 'credited', 'claimed')
    RETURNING id, chain, amount
), t AS (
    UPDATE access_tokens a SET remaining = 0 FROM p WHERE a.payment_id = p.id RETURNING a.id
)
SELECT p.id, p.chain, p.amount, (SELECT id FROM t) AS token_id FROM p;

-- name: api_payment_state
SELECT id, state FROM payments WHERE id = $1;

-- name: api_admin_audit
INSERT INTO admin_audit (action, payment_id, from_state, to_state, reason, client)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id, at;

-- ---------------------------------------------------------------- evm follower

-- name: evm_upsert_blocks
-- The recent canonical window: (number, hash, parent) of blocks the follower walked.
INSERT INTO chain_blocks (chain, num, hash, parent_hash, block_time)
SELECT $1, b.num, b.hash, b.parent_hash, b.block_time
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
     AS b (num, hash, parent_hash, block_time)
ON CONFLICT (chain, num) DO UPDATE
    SET hash = excluded.hash, parent_hash = excluded.parent_hash, block_time = excluded.block_time;

-- name: evm_prune_blocks
DELETE FROM chain_blocks WHERE chain = $1 AND num < $2;

-- name: evm_window
-- Stored blocks at or below the cursor, newest first: where to look for the fork point.
SELECT num, hash FROM chain_blocks WHERE chain = $1 AND num <= $2 ORDER BY num DESC LIMIT $3;

-- name: evm_forget_blocks
DELETE FROM chain_blocks WHERE chain = $1 AND num > $2;

-- name: evm_confirmed_ids
-- Observed payments deep enough to credit whose block is still the one in the
-- canonical window (a block we no longer hold a hash for was verified when the
-- follower walked past it, at depth >= confirmations).
SELECT p.id FROM payments p
WHERE p.chain = $1 AND p.state = 'observed' AND p.block_number <= $2
  AND NOT EXISTS (SELECT 1 FROM chain_blocks b
                  WHERE b.chain = p.chain AND b.num = p.block_number
                    AND b.hash IS DISTINCT FROM p.block_hash)
ORDER BY p.id;

-- name: evm_payments_above
-- Payments in blocks above a fork point, by state: what a reorg takes away.
SELECT id, state, block_number, block_hash FROM payments
WHERE chain = $1 AND block_number > $2
  AND state IN ('observed', 'below_minimum', 'credited', 'claimed');

-- ---------------------------------------------------------------- solana

-- name: solana_observed
-- Payments still waiting for finalization, oldest slot first (orphan detection).
SELECT id, tx_hash, log_index, block_number, amount
FROM payments
WHERE chain = 'solana' AND state = 'observed'
ORDER BY block_number, id
LIMIT $1;

-- name: solana_open_rows_for
-- Rows of these signatures that a finalized read may still credit or orphan.
SELECT id, tx_hash, log_index, token_account, amount, state
FROM payments
WHERE chain = 'solana' AND tx_hash = ANY($1::text[]) AND state = 'observed';

-- name: solana_history_accounts
-- Token accounts with Solana payments credited (or observed, awaiting credit): the
-- follower keeps following them (and doctor names them) even when they are neither
-- the associated token account nor listed. The set cannot grow from outside: new
-- rows only come from accounts already followed.
SELECT DISTINCT token_account FROM payments
WHERE chain = 'solana' AND state IN ('observed', 'credited', 'claimed')
  AND token_account IS NOT NULL
ORDER BY token_account;

-- name: solana_get_account_owner
SELECT owner, slot, signature FROM solana_account_owners WHERE token_account = $1;

-- name: solana_set_account_owner
-- Written with the account's cursor: the owner after the cursor's transaction.
INSERT INTO solana_account_owners (token_account, owner, slot, signature, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (token_account) DO UPDATE
    SET owner = excluded.owner, slot = excluded.slot, signature = excluded.signature,
        updated_at = now();

-- name: solana_payments_summary
-- Ground truth for tests and the bench: every Solana payment row.
SELECT tx_hash, log_index, token_account, from_address, to_address, token, amount, state,
       memo, reference_keys, block_number, reason
FROM payments
WHERE chain = 'solana'
ORDER BY block_number, tx_hash, log_index;

-- name: evm_relanded_ids
-- Flagged payments seen again on the canonical chain, now deep enough at their new
-- place and not contradicted by the canonical window (as evm_confirmed_ids).
SELECT p.id FROM payments p
WHERE p.chain = $1 AND p.reorged_after_credit AND p.relanded_at IS NOT NULL
  AND p.block_number <= $2 AND p.state IN ('credited', 'claimed')
  AND NOT EXISTS (SELECT 1 FROM chain_blocks b
                  WHERE b.chain = p.chain AND b.num = p.block_number
                    AND b.hash IS DISTINCT FROM p.block_hash)
ORDER BY p.id;

-- ---- stripe (subscriptions, webhooks, subscriber keys; migration 0006)

-- name: stripe_insert_event
-- The delivery's row; nothing comes back for an event id already applied.
INSERT INTO stripe_events (id, type, created, livemode, object_id, outcome, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: stripe_set_event_outcome
UPDATE stripe_events SET outcome = $2 WHERE id = $1;

-- name: stripe_record_failure
INSERT INTO stripe_event_failures (event_id, type, error) VALUES ($1, $2, $3);

-- name: stripe_upsert_customer
INSERT INTO stripe_customers (id, email) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE
    SET email = coalesce(excluded.email, stripe_customers.email), updated_at = now();

-- name: stripe_upsert_subscription
-- Newer state wins: an event older than the stored state, or of the same
-- second but less far along (incomplete after active), changes nothing, and a
-- canceled subscription stays canceled. Returns the row only when written.
INSERT INTO stripe_subscriptions AS s (
    id, customer_id, price_id, tier, status, current_period_start, current_period_end,
    cancel_at_period_end, canceled_at, state_created, state_event_id, past_due_since)
VALUES ($1, $2, $3, $4, $5::text, $6, $7, $8, $9, $10::timestamptz, $11,
        CASE WHEN $5::text IN ('past_due', 'unpaid') THEN $10::timestamptz END)
ON CONFLICT (id) DO UPDATE
    SET customer_id = excluded.customer_id,
        price_id = excluded.price_id,
        tier = excluded.tier,
        status = excluded.status,
        current_period_start = coalesce(excluded.current_period_start, s.current_period_start),
        current_period_end = coalesce(excluded.current_period_end, s.current_period_end),
        cancel_at_period_end = excluded.cancel_at_period_end,
        canceled_at = excluded.canceled_at,
        state_created = excluded.state_created,
        state_event_id = excluded.state_event_id,
        past_due_since = CASE WHEN excluded.status IN ('past_due', 'unpaid')
                              THEN coalesce(s.past_due_since, excluded.past_due_since) END,
        updated_at = now()
    WHERE s.status NOT IN ('canceled', 'incomplete_expired')
      AND (excluded.state_created > s.state_created
           OR (excluded.state_created = s.state_created
               AND stripe_status_rank(excluded.status) >= stripe_status_rank(s.status)))
RETURNING id, status, tier;

-- name: stripe_invoice_moves_subscription
-- An invoice's payment outcome moves its subscription between active and
-- past_due, only from the listed statuses and never behind newer state.
UPDATE stripe_subscriptions AS s
SET status = $2::text,
    past_due_since = CASE WHEN $2::text IN ('past_due', 'unpaid')
                          THEN coalesce(s.past_due_since, $3::timestamptz) END,
    state_created = $3::timestamptz, state_event_id = $4, updated_at = now()
WHERE s.id = $1 AND s.status = ANY($5::text[]) AND s.state_created <= $3::timestamptz
RETURNING id, status;

-- name: stripe_revoke_subscription_keys
UPDATE subscriber_keys SET revoked_at = now(), revoked_reason = $2
WHERE subscription_id = $1 AND revoked_at IS NULL
RETURNING id;

-- name: stripe_upsert_payment_method
INSERT INTO stripe_payment_methods AS pm (id, customer_id, type, brand, last4, state_created)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE
    SET customer_id = excluded.customer_id, type = excluded.type, brand = excluded.brand,
        last4 = excluded.last4, state_created = excluded.state_created, updated_at = now()
    WHERE excluded.state_created >= pm.state_created
RETURNING id;

-- name: stripe_upsert_invoice
-- paid and void are final; otherwise the newer event wins.
INSERT INTO stripe_invoices AS i (
    id, customer_id, subscription_id, status, paid, attempt_count, currency, amount_due,
    amount_paid, hosted_invoice_url, invoice_pdf, period_start, period_end, created,
    state_created)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (id) DO UPDATE
    SET status = excluded.status, paid = excluded.paid,
        attempt_count = greatest(i.attempt_count, excluded.attempt_count),
        amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,
        hosted_invoice_url = coalesce(excluded.hosted_invoice_url, i.hosted_invoice_url),
        invoice_pdf = coalesce(excluded.invoice_pdf, i.invoice_pdf),
        subscription_id = coalesce(excluded.subscription_id, i.subscription_id),
        state_created = excluded.state_created, updated_at = now()
    WHERE i.status NOT IN ('paid', 'void') AND excluded.state_created >= i.state_created
RETURNING id;

-- name: stripe_record_invoice_payment
-- Which payment paid which invoice ('' for the side not known); kept once.
INSERT INTO stripe_invoice_payments (invoice_id, payment_intent_id, charge_id)
VALUES ($1, coalesce($2, ''), coalesce($3, ''))
ON CONFLICT DO NOTHING;

-- name: stripe_upsert_charge
-- A refunded or disputed charge. Refunds only add up (amount_refunded never
-- goes down, a full refund stays full), so the delivery order does not matter.
INSERT INTO stripe_charges AS c (id, payment_intent_id, invoice_id, amount, amount_refunded,
                                 fully_refunded)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE
    SET payment_intent_id = coalesce(c.payment_intent_id, excluded.payment_intent_id),
        invoice_id = coalesce(c.invoice_id, excluded.invoice_id),
        amount = coalesce(excluded.amount, c.amount),
        amount_refunded = greatest(c.amount_refunded, excluded.amount_refunded),
        fully_refunded = c.fully_refunded OR excluded.fully_refunded,
        updated_at = now()
RETURNING id;

-- name: stripe_upsert_dispute
-- A closed dispute is never reopened by a late open-status event; among
-- states of the same rank the newer event wins.
INSERT INTO stripe_disputes AS d (id, charge_id, status, state_created)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE
    SET status = excluded.status, state_created = excluded.state_created, updated_at = now()
    WHERE stripe_dispute_rank(excluded.status) > stripe_dispute_rank(d.status)
       OR (stripe_dispute_rank(excluded.status) = stripe_dispute_rank(d.status)
           AND excluded.state_created >= d.state_created)
RETURNING id;

-- name: stripe_charge_reversal
-- Whether a charge holds access off: fully refunded, or a dispute on it that
-- was not won (open ones included: Stripe has taken the money back already).
UPDATE stripe_charges c
SET revoked_reason = CASE
        WHEN c.fully_refunded THEN 'refunded'
        WHEN EXISTS (SELECT 1 FROM stripe_disputes d
                     WHERE d.charge_id = c.id AND d.status NOT IN ('won', 'warning_closed'))
            THEN 'disputed'
    END,
    updated_at = now()
WHERE c.id = $1
RETURNING c.id, c.subscription_id, c.revoked_reason;

-- name: stripe_link_charges
-- Tie charges to their invoice and subscription as soon as every piece has
-- arrived, in whatever order Stripe delivered them; the period anchor is set
-- once, when the subscription is first known for the charge. Only charges
-- touched in the last 35 days wait: an invoice comes within Stripe's 3 days of
-- retries (or a 30-day stripe-sync), and a later event on the charge touches it.
WITH pending AS (
    SELECT c.id,
           coalesce(c.invoice_id,
                    (SELECT p.invoice_id FROM stripe_invoice_payments p
                     WHERE p.charge_id = c.id
                        OR (c.payment_intent_id IS NOT NULL
                            AND p.payment_intent_id = c.payment_intent_id)
                     ORDER BY p.invoice_id LIMIT 1)) AS invoice_id
    FROM stripe_charges c
    WHERE (c.subscription_id IS NULL OR c.period_anchor IS NULL)
      AND c.updated_at > now() - interval '35 days'
), found AS (
    SELECT p.id, p.invoice_id, i.subscription_id,
           greatest(s.current_period_start, i.created) AS anchor
    FROM pending p
    JOIN stripe_invoices i ON i.id = p.invoice_id
    LEFT JOIN stripe_subscriptions s ON s.id = i.subscription_id
    WHERE i.subscription_id IS NOT NULL
)
UPDATE stripe_charges c
SET invoice_id = f.invoice_id, subscription_id = f.subscription_id,
    period_anchor = coalesce(c.period_anchor, f.anchor), updated_at = now()
FROM found f
WHERE c.id = f.id
RETURNING c.id;

-- name: stripe_charge_subscription
SELECT subscription_id FROM stripe_charges WHERE id = $1;

-- name: stripe_complete_checkout
-- checkout.session.completed: bind the session to its customer and
-- subscription. Matched by our checkout id (client_reference_id) or session id.
UPDATE stripe_checkouts
SET session_id = coalesce(session_id, $2), customer_id = $3, subscription_id = $4,
    completed_at = coalesce(completed_at, now())
WHERE ($1::uuid IS NOT NULL AND id = $1::uuid) OR session_id = $2
RETURNING id;

-- name: stripe_insert_checkout
INSERT INTO stripe_checkouts (claim_hash, tier, email, expires_at)
VALUES ($1, $2, $3, now() + $4::interval)
RETURNING id;

-- name: stripe_set_checkout_session
UPDATE stripe_checkouts SET session_id = $2, customer_id = $3 WHERE id = $1;

-- name: stripe_lock_checkout_claim
SELECT c.id, c.claimed_at, c.expires_at < now() AS expired, c.completed_at,
       c.subscription_id, s.customer_id, s.status, s.tier, s.current_period_start
FROM stripe_checkouts c
LEFT JOIN stripe_subscriptions s ON s.id = c.subscription_id
WHERE c.claim_hash = $1
FOR UPDATE OF c;

-- name: stripe_mark_checkout_claimed
UPDATE stripe_checkouts SET claimed_at = now() WHERE id = $1 AND claimed_at IS NULL;

-- name: stripe_insert_subscriber_key
INSERT INTO subscriber_keys (key_hash, key_prefix, subscription_id, customer_id, checkout_id,
                             usage_period_start)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: stripe_consume_subscriber_key
-- One statement meters a call: the key must be live, its subscription active
-- (or past_due inside the grace period $3) and not held off by a refund or
-- dispute (the stripe_reversal function), the billing period's quota and the
-- minute's rate limit must both hold. Usage resets when the billing
-- period changes. The usage row is written by the same statement.
WITH upd AS (
    UPDATE subscriber_keys AS k
    SET used = CASE WHEN k.usage_period_start IS NOT DISTINCT FROM s.current_period_start
                    THEN k.used + $2::integer ELSE $2::integer END,
        usage_period_start = s.current_period_start,
        window_count = CASE WHEN k.window_start = date_trunc('minute', now())
                            THEN k.window_count + $2 ELSE $2 END,
        window_start = date_trunc('minute', now())
    FROM stripe_subscriptions AS s, stripe_tiers AS t
    WHERE k.key_hash = $1 AND k.revoked_at IS NULL
      AND s.id = k.subscription_id AND t.tier = s.tier
      AND (s.status IN ('active', 'trialing')
           OR (s.status = 'past_due' AND s.past_due_since + $3::interval > now()))
      AND stripe_reversal(s.id, s.status, s.current_period_start) IS NULL
      AND (CASE WHEN k.usage_period_start IS NOT DISTINCT FROM s.current_period_start
                THEN k.used ELSE 0 END) + $2 <= t.monthly_quota
      AND (CASE WHEN k.window_start = date_trunc('minute', now())
                THEN k.window_count ELSE 0 END) + $2 <= t.rate_per_minute
    RETURNING k.id, s.tier, s.status, t.monthly_quota - k.used AS remaining,
              s.current_period_end AS period_end
), ins AS (
    INSERT INTO subscriber_usage (key_id, endpoint, cost)
    SELECT id, $4::text, $2::integer FROM upd
    RETURNING id
)
SELECT upd.id, upd.tier, upd.status, upd.remaining, upd.period_end, ins.id AS usage_id
FROM upd, ins;

-- name: stripe_explain_subscriber_key
-- Why a key was refused (read after the metering UPDATE matched nothing).
SELECT k.revoked_reason, s.status, s.tier,
       (s.status = 'past_due' AND s.past_due_since + $2::interval > now()) AS in_grace,
       stripe_reversal(s.id, s.status, s.current_period_start) AS reversal,
       t.monthly_quota,
       (CASE WHEN k.usage_period_start IS NOT DISTINCT FROM s.current_period_start
             THEN k.used ELSE 0 END) AS used,
       t.rate_per_minute,
       (CASE WHEN k.window_start = date_trunc('minute', now())
             THEN k.window_count ELSE 0 END) AS window_count,
       s.current_period_end
FROM subscriber_keys k
LEFT JOIN stripe_subscriptions s ON s.id = k.subscription_id
LEFT JOIN stripe_tiers t ON t.tier = s.tier
WHERE k.key_hash = $1;

-- name: stripe_key_customer
-- The customer a live key belongs to (billing pages: portal, invoices).
SELECT k.customer_id FROM subscriber_keys k WHERE k.key_hash = $1 AND k.revoked_at IS NULL;

-- name: stripe_customer_invoices
SELECT id, status, paid, currency, amount_due, amount_paid, hosted_invoice_url, invoice_pdf,
       period_start, period_end, created
FROM stripe_invoices
WHERE customer_id = $1
ORDER BY created DESC, id
LIMIT $2;

-- name: stripe_tiers
SELECT tier, monthly_quota, rate_per_minute, price_usd_cents FROM stripe_tiers ORDER BY price_usd_cents;

-- name: stripe_lock_key
SELECT id, subscription_id, customer_id, used, usage_period_start, window_start, window_count
FROM subscriber_keys
WHERE key_hash = $1 AND revoked_at IS NULL
FOR UPDATE;

-- name: stripe_insert_rotated_key
-- The successor of a rotated key: same subscription, and the usage so far
-- carries over (rotating must not reset the quota or the rate window).
INSERT INTO subscriber_keys (key_hash, key_prefix, subscription_id, customer_id, used,
                             usage_period_start, window_start, window_count)
SELECT $2, $3, subscription_id, customer_id, used, usage_period_start, window_start, window_count
FROM subscriber_keys WHERE id = $1
RETURNING id;

-- name: stripe_revoke_key
UPDATE subscriber_keys SET revoked_at = now(), revoked_reason = $2
WHERE id = $1 AND revoked_at IS NULL;

-- ---------------------------------------------------------------- ops (leader election)

-- name: try_leader_lock
-- Session-level: held until unlocked or the session ends (process killed, network gone).
SELECT pg_try_advisory_lock($1::bigint);

-- name: leader_unlock
SELECT pg_advisory_unlock($1::bigint);

-- name: leader_ping
SELECT 1;

-- name: leader_lock_holder
-- The session holding a chain's leader lock (application_name names the process).
SELECT a.pid, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = (($1::bigint >> 32) & x'ffffffff'::bigint)::oid
  AND l.objid = ($1::bigint & x'ffffffff'::bigint)::oid
  AND l.objsubid = 1
  AND a.datname = current_database();

-- name: server_version
SHOW server_version;

-- name: stripe_refund_usage
-- The paid route failed (5xx): the call does not count against the quota, once.
WITH u AS (
    UPDATE subscriber_usage SET refunded = true, status_code = $2
    WHERE id = $1 AND NOT refunded
    RETURNING key_id, cost
)
UPDATE subscriber_keys k SET used = greatest(k.used - u.cost, 0)
FROM u WHERE k.id = u.key_id
RETURNING k.used;

-- name: stripe_key_subscription
-- What a subscriber sees about its own key: subscription, tier, usage this period.
SELECT k.key_prefix, k.customer_id, s.id AS subscription_id, s.status, s.tier,
       s.cancel_at_period_end, s.current_period_start, s.current_period_end, s.past_due_since,
       stripe_reversal(s.id, s.status, s.current_period_start) AS reversal,
       t.monthly_quota, t.rate_per_minute,
       (CASE WHEN k.usage_period_start IS NOT DISTINCT FROM s.current_period_start
             THEN k.used ELSE 0 END) AS used
FROM subscriber_keys k
JOIN stripe_subscriptions s ON s.id = k.subscription_id
LEFT JOIN stripe_tiers t ON t.tier = s.tier
WHERE k.key_hash = $1 AND k.revoked_at IS NULL;

-- name: stripe_customer_cards
SELECT brand, last4 FROM stripe_payment_methods WHERE customer_id = $1 ORDER BY updated_at DESC;

-- ---------------------------------------------------------------- x402 standard (exact, EIP-3009)

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

-- name: x402_claim_payment
-- The call is served: the credited payment is consumed, never claimable for a token.
WITH p AS (
    UPDATE payments SET state = 'claimed', updated_at = now(),
        reason = 'x402 authorization ' || $1::bigint || ': the call was served at settlement'
    WHERE id = $2 AND state = 'credited'
    RETURNING id
)
UPDATE x402_authorizations SET payment_id = $2
WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM p)
RETURNING id;

-- name: x402_mark_failed
UPDATE x402_authorizations SET status = 'failed', error = $2, updated_at = now()
WHERE id = $1 AND status IN ('verified', 'settling');

-- name: x402_authorization
SELECT * FROM x402_authorizations WHERE id = $1;

-- name: x402_nonce_seen
-- A fast refusal for a replay before any RPC call; the INSERT above is the real guard.
SELECT id FROM x402_authorizations WHERE chain = $1 AND asset = $2 AND payer = $3 AND nonce = $4;

-- ---------------------------------------------------------------- x402 standard on Solana (exact)

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
   OR (chain = 'solana' AND tx_hash = $2 AND token_account = $3 AND to_address = $4
       AND token = $5 AND amount = $6)
ORDER BY (id = $1) DESC NULLS LAST
LIMIT 1
FOR UPDATE;

-- name: x402_svm_claim_payment
-- The call is served: the credited payment is consumed, never claimable for a token.
WITH p AS (
    UPDATE payments SET state = 'claimed', updated_at = now(),
        reason = 'x402 solana settlement ' || $1::bigint || ': the call was served at settlement'
    WHERE id = $2 AND state = 'credited'
    RETURNING id
)
UPDATE x402_solana_settlements SET payment_id = $2
WHERE id = $1::bigint AND EXISTS (SELECT 1 FROM p)
RETURNING id;

-- name: x402_svm_mark_failed
UPDATE x402_solana_settlements
SET status = 'failed', error = $2, failed_on_chain = $3, updated_at = now()
WHERE id = $1 AND status = 'settling';

-- name: x402_svm_settlement
SELECT * FROM x402_solana_settlements WHERE id = $1;
