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
    'credited_at', p.credited_at, 'orphaned_at', p.orphaned_at) ORDER BY p.id))
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
