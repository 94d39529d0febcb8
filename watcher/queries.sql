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

-- name: session_utc
SET TIME ZONE 'UTC';

-- ---------------------------------------------------------------- ledger (both chain families)

-- name: record_transfers
-- Insert transfers seen on chain, one row per (chain, tx_hash, log_index).
-- A row seen again is left alone, except an orphaned (or still observed) row
-- that reappears in another block: it is observed again at its new place.
-- Credited rows are never touched here. Returns the rows inserted or revived.
INSERT INTO payments AS p (chain, tx_hash, log_index, block_number, block_hash, block_time,
                           token, from_address, to_address, token_account, amount, state,
                           reason, memo, reference_keys)
SELECT t.chain, t.tx_hash, t.log_index, t.block_number, t.block_hash, t.block_time,
       t.token, t.from_address, t.to_address, t.token_account, t.amount, t.state,
       t.reason, t.memo, r.reference_keys
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::timestamptz[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[], $12::text[],
            $13::text[], $14::text[], $15::text[])
     AS t (chain, tx_hash, log_index, block_number, block_hash, block_time, token,
           from_address, to_address, token_account, amount, state, reason, memo, refs_csv)
CROSS JOIN LATERAL (SELECT CASE WHEN t.refs_csv IS NULL OR t.refs_csv = '' THEN '{}'::text[]
                                ELSE string_to_array(t.refs_csv, ',') END AS reference_keys) r
ON CONFLICT (chain, tx_hash, log_index) DO UPDATE
    SET block_number = excluded.block_number,
        block_hash = excluded.block_hash,
        block_time = excluded.block_time,
        state = CASE WHEN excluded.state = 'below_minimum' THEN 'below_minimum' ELSE 'observed' END,
        reason = excluded.reason,
        orphaned_at = NULL,
        updated_at = now()
    WHERE p.state = 'orphaned'
       OR (p.state IN ('observed', 'below_minimum')
           AND p.block_hash IS DISTINCT FROM excluded.block_hash)
RETURNING p.id, p.chain, p.state, p.amount;

-- name: credit_payments
-- observed -> credited for the given ids (only rows still observed).
UPDATE payments
SET state = 'credited', credited_at = now(), updated_at = now(), reason = NULL
WHERE id = ANY($1::bigint[]) AND state = 'observed'
RETURNING id, chain, amount, block_number, invoice_id;

-- name: orphan_payments
-- observed -> orphaned (block left the canonical chain or never finalized).
UPDATE payments
SET state = 'orphaned', orphaned_at = now(), updated_at = now(), reason = $2
WHERE id = ANY($1::bigint[]) AND state = 'observed'
RETURNING id, chain, amount;

-- name: flag_reorged_credits
-- A credited payment whose block left the canonical chain: flag, never delete.
UPDATE payments
SET reorged_after_credit = true, updated_at = now(), reason = $2
WHERE id = ANY($1::bigint[]) AND state IN ('credited', 'claimed') AND NOT reorged_after_credit
RETURNING id, chain, amount, tx_hash;

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
-- (or past_due inside the grace period $3), the billing period's quota and
-- the minute's rate limit must both hold. Usage resets when the billing
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
      AND (CASE WHEN k.usage_period_start IS NOT DISTINCT FROM s.current_period_start
                THEN k.used ELSE 0 END) + $2 <= t.monthly_quota
      AND (CASE WHEN k.window_start = date_trunc('minute', now())
                THEN k.window_count ELSE 0 END) + $2 <= t.rate_per_minute
    RETURNING k.id, s.tier, s.status, t.monthly_quota - k.used AS remaining
), ins AS (
    INSERT INTO subscriber_usage (key_id, endpoint, cost)
    SELECT id, $4::text, $2::integer FROM upd
    RETURNING id
)
SELECT upd.id, upd.tier, upd.status, upd.remaining FROM upd, ins;

-- name: stripe_explain_subscriber_key
-- Why a key was refused (read after the metering UPDATE matched nothing).
SELECT k.revoked_reason, s.status, s.tier,
       (s.status = 'past_due' AND s.past_due_since + $2::interval > now()) AS in_grace,
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
