-- Events (watcher/events.py): each resource's query builds the resource as it is now
-- and hands it to emit_events() (migration 0020), which writes the outbox rows, their
-- webhook deliveries and the NOTIFY, all in the caller's transaction.

-- name: emit_payment_events
-- $1 event type, $2 payment ids.
SELECT emit_events($1, 'payment', array_agg(p.id::text ORDER BY p.id), array_agg(jsonb_build_object(
    'object', 'payment', 'id', p.id::text, 'chain', p.chain, 'tx_hash', p.tx_hash,
    'log_index', p.log_index, 'block_number', p.block_number, 'block_hash', p.block_hash,
    'block_time', p.block_time, 'token', p.token, 'from', p.from_address,
    'to', p.to_address, 'token_account', p.token_account,
    'amount', p.amount::text, 'currency', 'USDC', 'decimals', 6,
    'state', p.state, 'reason', p.reason, 'invoice_id', p.invoice_id,
    'reorged_after_credit', p.reorged_after_credit, 'observed_at', p.observed_at,
    'credited_at', p.credited_at, 'orphaned_at', p.orphaned_at,
    -- holds (issue 16)
    'tx_sender', p.tx_sender, 'risk', p.risk, 'held_at', p.held_at,
    'reviewed_by', p.reviewed_by, 'reviewed_at', p.reviewed_at,
    'review_note', p.review_note) ORDER BY p.id))
FROM payments p WHERE p.id = ANY ($2::bigint[]);

-- name: emit_invoice_events
-- $1 event type, $2 invoice ids, $3 the payment each is about, aligned with $2 (or
-- empty): the linked payment when there is one, else the one given. An invoice.paid
-- names its payment that way (observed, not linked until credit) and says 'paid',
-- as GET /x402/invoices/{id} does; invoices.status itself stays 'open'.
SELECT emit_events($1, 'invoice', array_agg(i.id::text ORDER BY i.created_at, i.id),
    array_agg(jsonb_build_object(
    'object', 'invoice', 'id', i.id::text, 'chain', i.chain, 'pay_to', i.pay_to,
    'token', i.token, 'amount', i.amount::text, 'currency', 'USDC', 'decimals', 6,
    'requests', i.requests, 'reference', i.reference,
    'status', CASE WHEN m.payment_id IS NOT NULL AND i.status = 'open' THEN 'paid'
                   ELSE i.status END,
    'created_at', i.created_at, 'expires_at', i.expires_at,
    'payment_id', coalesce((SELECT p.id::text FROM payments p WHERE p.invoice_id = i.id),
                           m.payment_id::text))
    ORDER BY i.created_at, i.id))
FROM invoices i
LEFT JOIN unnest($2::uuid[], $3::bigint[]) AS m (invoice_id, payment_id) ON m.invoice_id = i.id
WHERE i.id = ANY ($2::uuid[]);

-- name: emit_token_events
-- $1 event type, $2 access token ids. Never the token itself: only its hash's id.
SELECT emit_events($1, 'token', array_agg(t.id::text ORDER BY t.id), array_agg(jsonb_build_object(
    'object', 'token', 'id', t.id::text, 'payment_id', t.payment_id::text,
    'invoice_id', t.invoice_id, 'payer', t.payer, 'requests_total', t.requests_total,
    'remaining', t.remaining, 'created_at', t.created_at, 'expires_at', t.expires_at)
    ORDER BY t.id))
FROM access_tokens t WHERE t.id = ANY ($2::bigint[]);

-- name: emit_event
-- One event whose resource the caller describes ($1 type, $2 resource, $3 id, $4 data).
SELECT emit_events($1, $2, ARRAY[$3::text], ARRAY[$4::jsonb]);

-- name: emit_x402_settlement_events
-- $1 event type, $2 EVM authorization ids, $3 Solana settlement ids. Only rows whose
-- status now is the one the type names are written (settled, failed, reorged): a
-- caller that passes a row another transaction moved meanwhile writes nothing false.
-- The id carries its rail (evm-<id>, svm-<id>): the two tables number separately.
WITH s AS (
    SELECT 'evm' AS rail, a.id, a.chain, a.payer, a.pay_to, a.asset AS token, a.amount,
           a.status, a.error, a.tx_hash, a.payment_id, a.resource, a.x402_version,
           a.settled_by, a.created_at, a.updated_at
    FROM x402_authorizations a WHERE a.id = ANY ($2::bigint[])
    UNION ALL
    -- A Solana row names its network by CAIP-2 id (solana:<genesis hash>).
    SELECT 'svm', s.id, s.network, s.payer, s.pay_to, s.mint, s.amount, s.status, s.error,
           s.signature, s.payment_id, s.resource, s.x402_version, 'fee_payer',
           s.created_at, s.updated_at
    FROM x402_solana_settlements s WHERE s.id = ANY ($3::bigint[])
)
SELECT emit_events($1, 'x402_settlement', array_agg(s.rail || '-' || s.id ORDER BY s.rail, s.id),
    array_agg(jsonb_build_object(
    'object', 'x402_settlement', 'id', s.rail || '-' || s.id, 'rail', s.rail,
    'chain', s.chain, 'payer', s.payer, 'pay_to', s.pay_to, 'token', s.token,
    'amount', s.amount::text, 'currency', 'USDC', 'decimals', 6, 'status', s.status,
    'error', s.error, 'tx_hash', s.tx_hash, 'payment_id', s.payment_id::text,
    'resource', s.resource, 'x402_version', s.x402_version, 'settled_by', s.settled_by,
    'created_at', s.created_at, 'updated_at', s.updated_at) ORDER BY s.rail, s.id))
FROM s WHERE s.status = split_part($1, '.', 2);

-- name: emit_subscription_events
-- $1 event type, $2 Stripe subscription ids (sub_...): the subscription as stored now.
SELECT emit_events($1, 'subscription', array_agg(s.id ORDER BY s.id), array_agg(jsonb_build_object(
    'object', 'subscription', 'id', s.id, 'customer', s.customer_id, 'tier', s.tier,
    'price_id', s.price_id, 'status', s.status,
    'current_period_start', s.current_period_start,
    'current_period_end', s.current_period_end,
    'cancel_at_period_end', s.cancel_at_period_end, 'past_due_since', s.past_due_since,
    'canceled_at', s.canceled_at, 'updated_at', s.updated_at) ORDER BY s.id))
FROM stripe_subscriptions s WHERE s.id = ANY ($2::text[]);

-- name: emit_subscription_charge_events
-- $1 event type (subscription.refunded / .disputed), $2 Stripe charge ids: one event
-- per charge, about the subscription the charge is tied to, with the charge (amounts
-- in cents; the charge's amount is null until a charge event said it).
SELECT emit_events($1, 'subscription', array_agg(s.id ORDER BY c.id), array_agg(jsonb_build_object(
    'object', 'subscription', 'id', s.id, 'customer', s.customer_id, 'tier', s.tier,
    'price_id', s.price_id, 'status', s.status,
    'current_period_start', s.current_period_start,
    'current_period_end', s.current_period_end,
    'cancel_at_period_end', s.cancel_at_period_end, 'past_due_since', s.past_due_since,
    'canceled_at', s.canceled_at, 'updated_at', s.updated_at,
    'charge', jsonb_build_object('id', c.id, 'amount', c.amount,
                                 'amount_refunded', c.amount_refunded,
                                 'invoice', c.invoice_id, 'reversal', c.revoked_reason,
                                 'period_anchor', c.period_anchor)) ORDER BY c.id))
FROM stripe_charges c JOIN stripe_subscriptions s ON s.id = c.subscription_id
WHERE c.id = ANY ($2::text[]);

-- name: explain_events
-- `watcher explain`: the events written for one payment ($1), oldest first, with how
-- their webhook deliveries stand.
SELECT e.id, e.type,
       count(d.id) FILTER (WHERE d.status = 'succeeded') AS delivered,
       count(d.id) FILTER (WHERE d.status = 'pending') AS pending,
       count(d.id) FILTER (WHERE d.status = 'failed') AS failed,
       count(d.id) FILTER (WHERE d.status = 'cancelled') AS cancelled
FROM events e LEFT JOIN webhook_deliveries d ON d.event_id = e.id
WHERE e.resource = 'payment' AND e.resource_id = $1::bigint::text
GROUP BY e.id, e.type ORDER BY e.id;
