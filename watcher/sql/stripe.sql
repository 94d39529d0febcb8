-- Stripe subscriptions (api/subscriptions.py, stripe_charges.py, entitlements.py,
-- routes/stripe.py): webhook events, billing objects, checkout, subscriber keys.
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- webhook events

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

-- ---------------- customers, subscriptions, payment methods, invoices

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

-- ---------------- charges: refunds and disputes

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

-- ---------------- checkout

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

-- ---------------- subscriber keys: issue, meter, rotate, revoke

-- name: stripe_insert_subscriber_key
INSERT INTO subscriber_keys (key_hash, key_prefix, subscription_id, customer_id, checkout_id,
                             usage_period_start)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: stripe_consume_subscriber_key
-- One statement meters a call: the key must be live, its subscription active
-- (or past_due inside the grace period $3) and not held off by a refund or
-- dispute (the stripe_reversal function), the billing period's quota and the
-- minute's rate limit must both hold, and the tier must be one the route
-- allows ($5; NULL: any). Usage resets when the billing period changes. The
-- usage row is written by the same statement.
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
      AND ($5::text[] IS NULL OR s.tier = ANY($5::text[]))
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

-- ---------------- billing pages

-- name: stripe_key_customer
-- The customer a live key belongs to (billing pages: portal, invoices).
SELECT k.customer_id FROM subscriber_keys k WHERE k.key_hash = $1 AND k.revoked_at IS NULL;

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

-- name: stripe_customer_invoices
SELECT id, status, paid, currency, amount_due, amount_paid, hosted_invoice_url, invoice_pdf,
       period_start, period_end, created
FROM stripe_invoices
WHERE customer_id = $1
ORDER BY created DESC, id
LIMIT $2;

-- name: stripe_customer_cards
SELECT brand, last4 FROM stripe_payment_methods WHERE customer_id = $1 ORDER BY updated_at DESC;

-- name: stripe_tiers
SELECT tier, monthly_quota, rate_per_minute, price_usd_cents FROM stripe_tiers ORDER BY price_usd_cents;

-- ---------------- our events about subscriptions (api/stripe_events.py)

-- name: stripe_events_lock
-- One Stripe event applied at a time (all processes): its subscription events are the
-- difference between the state before and after it, which a concurrent delivery must
-- not move in between. Stripe sends a few events a second at most.
SELECT pg_advisory_xact_lock(hashtextextended('stripe-events', 0));

-- name: stripe_subscription_states
SELECT id, status, tier FROM stripe_subscriptions WHERE id = ANY ($1::text[]);

-- name: stripe_charge_states
-- The charges an event may reverse or tie to a subscription: the ones named ($1), and
-- with $2 the reversed ones still waiting for their subscription (stripe_link_charges
-- may tie them now; its 35-day window).
SELECT id, subscription_id, revoked_reason FROM stripe_charges
WHERE id = ANY ($1::text[])
   OR ($2 AND subscription_id IS NULL AND revoked_reason IS NOT NULL
       AND updated_at > now() - interval '35 days');
