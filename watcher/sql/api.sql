-- Our own invoice and token rail (api/): chain status and lookups, invoices, claims
-- (payment -> token), metering, idempotency keys, rate limits, and the admin routes.
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- chain status and lookups

-- name: api_chain_status
-- Per chain: best head seen, slowest stream's cursor, and how long since it moved.
SELECT chain, max(head) AS head, min(num) AS cursor,
       extract(epoch FROM now() - min(updated_at))::float8 AS age_seconds
FROM cursors GROUP BY chain;

-- name: api_payments_by_tx
SELECT p.id, p.chain, p.tx_hash, p.log_index, p.block_number, p.from_address, p.to_address,
       p.token, p.amount, p.state, p.reason, p.invoice_id, p.reorged_after_credit,
       p.relanded_at, t.id AS token_id, coalesce(p.block_time, p.observed_at) AS paid_at,
       (SELECT max(c.head) FROM cursors c WHERE c.chain = p.chain) AS head
FROM payments p
LEFT JOIN access_tokens t ON t.payment_id = p.id
WHERE p.chain = $1 AND p.tx_hash = $2
ORDER BY p.log_index;

-- ---------------- claims: one credited payment -> one token

-- name: api_claim_refusal
-- Why ledger.claim issued nothing: the state (held and rejected with their reason),
-- the flag, a token already issued, and when it was paid (the claim age limit).
SELECT p.state, p.amount, p.reorged_after_credit, p.relanded_at, t.id AS token_id,
       p.reason, coalesce(p.block_time, p.observed_at) AS paid_at
FROM payments p LEFT JOIN access_tokens t ON t.payment_id = p.id
WHERE p.id = $1;

-- ---------------- invoices

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
-- $8: the Solana network (invoices of the Solana family match by reference, not amount).
INSERT INTO invoices (chain, pay_to, token, amount, requests, reference, claim_secret_hash,
                      expires_at)
VALUES ($8, $1, $2, $3, $4, $5, $6, now() + $7::interval)
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
-- An observed (not yet confirmed) payment that will match the invoice once credited,
-- or one held for review (or rejected) at credit (issue 16: it is linked only when
-- released); a held or rejected one first: the payer must hear why.
SELECT p.tx_hash, p.block_number, p.amount, p.state, p.reason,
       (SELECT max(c.head) FROM cursors c WHERE c.chain = p.chain) AS head
FROM invoices i
JOIN payments p
  ON p.chain = i.chain AND p.to_address = i.pay_to AND p.token = i.token
 AND p.state IN ('observed', 'held', 'rejected') AND p.invoice_id IS NULL
 AND coalesce(p.block_time, p.observed_at) >= date_trunc('second', i.created_at)
 AND coalesce(p.block_time, p.observed_at) <= i.expires_at + $2::interval
 AND ((p.family = 'evm' AND p.amount = i.amount)
      OR (p.family = 'solana' AND i.reference = ANY (p.reference_keys) AND p.amount >= i.amount))
WHERE i.id = $1
ORDER BY p.state = 'observed', p.id
LIMIT 1;

-- name: live_invoice_seq
-- The invoice's newest event (0: none yet): part of each SSE message id of
-- GET /x402/invoices/{id}/events (api/invoice_stream.py), so a stream resumed with
-- Last-Event-ID sends a state again only when an event came since.
SELECT coalesce(max(id), 0) FROM events WHERE resource = 'invoice' AND resource_id = $1;

-- ---------------- metering (usage) and tokens

-- name: api_meter
-- One paid call: decrement only if enough remains and the token is alive, and
-- record the usage, in one statement (atomic; concurrent calls never overdraw).
WITH t AS (
    UPDATE access_tokens SET remaining = remaining - $2
    WHERE token_hash = $1 AND remaining >= $2 AND expires_at > now()
      AND suspended_reason IS NULL
    RETURNING id, remaining, expires_at, payment_id, invoice_id, payer, requests_total,
              created_at
), u AS (
    INSERT INTO token_usage (token_id, endpoint, cost)
    SELECT id, $3, $2 FROM t
    RETURNING id
), used_up AS (
    -- token.used_up (issue 14), in this statement: only when this call took the last
    -- unit, so a call that leaves some costs nothing more. The token as it is after
    -- the charge (t's RETURNING; the same fields as events.sql emit_token_events).
    SELECT emit_events('token.used_up', 'token', ARRAY[t.id::text], ARRAY[jsonb_build_object(
        'object', 'token', 'id', t.id::text, 'payment_id', t.payment_id::text,
        'invoice_id', t.invoice_id, 'payer', t.payer, 'requests_total', t.requests_total,
        'remaining', t.remaining, 'created_at', t.created_at, 'expires_at', t.expires_at)])
        AS n
    FROM t WHERE t.remaining = 0
)
SELECT t.id AS token_id, t.remaining, t.expires_at, u.id AS usage_id,
       (SELECT n FROM used_up) AS used_up_events
FROM t, u;

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

-- ---------------- idempotency keys

-- name: api_meter_keyed
-- As api_meter, with an Idempotency-Key: the usage row starts 'running' with the
-- request's fingerprint ($5) and the key's end (now + $6, at most the token's end).
-- A concurrent twin with the same key makes the insert do nothing (usage_id
-- NULL): the caller rolls back and answers as for a replay.
WITH t AS (
    UPDATE access_tokens SET remaining = remaining - $2
    WHERE token_hash = $1 AND remaining >= $2 AND expires_at > now()
      AND suspended_reason IS NULL
    RETURNING id, remaining, expires_at, payment_id, invoice_id, payer, requests_total,
              created_at
), u AS (
    INSERT INTO token_usage
        (token_id, endpoint, cost, idempotency_key, request_hash, replay_state, key_expires_at)
    SELECT id, $3, $2, $4, $5, 'running', least(now() + $6::interval, expires_at) FROM t
    ON CONFLICT (token_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), used_up AS (
    -- token.used_up (issue 14), in this statement: only when this call took the last
    -- unit, so a call that leaves some costs nothing more. The token as it is after
    -- the charge (t's RETURNING; the same fields as events.sql emit_token_events).
    SELECT emit_events('token.used_up', 'token', ARRAY[t.id::text], ARRAY[jsonb_build_object(
        'object', 'token', 'id', t.id::text, 'payment_id', t.payment_id::text,
        'invoice_id', t.invoice_id, 'payer', t.payer, 'requests_total', t.requests_total,
        'remaining', t.remaining, 'created_at', t.created_at, 'expires_at', t.expires_at)])
        AS n
    FROM t WHERE t.remaining = 0
)
-- A twin's conflict (usage_id NULL) is rolled back by the caller, its event with it.
SELECT t.id AS token_id, t.remaining, t.expires_at, u.id AS usage_id,
       (SELECT n FROM used_up) AS used_up_events
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

-- ---------------- rate limits

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

-- ---------------- admin: reports, settle and invalidate by hand, audit

-- name: api_admin_stats_24h
SELECT * FROM v_x402_stats_24h ORDER BY chain;

-- name: api_admin_top_payers
SELECT * FROM v_x402_top_payers LIMIT 10;

-- name: api_admin_endpoint_stats
SELECT * FROM v_x402_endpoint_stats ORDER BY calls DESC LIMIT 50;

-- name: api_admin_active_tokens
SELECT count(*) AS tokens, coalesce(sum(remaining), 0) AS requests_remaining
FROM v_x402_active_payments;

-- name: api_payment_state
SELECT id, state FROM payments WHERE id = $1;

-- name: api_admin_audit
INSERT INTO admin_audit (action, payment_id, from_state, to_state, reason, client, operator)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, at;

-- name: api_admin_audit_list
-- Newest first; each filter is optional (NULL: any); $4 pages (rows before that id).
SELECT id, at, operator, client, action, payment_id, from_state, to_state, subject,
       reason, detail::text AS detail
FROM admin_audit
WHERE ($1::bigint IS NULL OR payment_id = $1)
  AND ($2::text IS NULL OR subject = $2)
  AND ($3::text IS NULL OR operator = $3)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5;
