-- The ledger shared by both chain families (watcher/ledger.py): payment rows and
-- every transition of their state (record, credit, orphan, flags, x402 links, claims,
-- operator settle/invalidate, invoice expiry), stream cursors, and the invoice links.
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- payments: record, credit, orphan, reorg flags

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
-- Holds (issue 16): a held row is not credited yet: seen at another place it is observed
-- there again (and screened again at credit); a rejected one is kept like a credited one.
-- The transaction sender and the oracle's answers are kept once learned.
-- Returns the rows inserted or revived as observed / below_minimum (never credited ones).
WITH up AS (
    INSERT INTO payments AS p (chain, tx_hash, log_index, transfer_key, block_number,
                               block_hash, block_time, token, from_address, to_address,
                               token_account, amount, state, reason, memo, reference_keys,
                               tx_sender, oracle_answers)
    SELECT t.chain, t.tx_hash, t.log_index, t.transfer_key, t.block_number, t.block_hash,
           t.block_time, t.token, t.from_address, t.to_address, t.token_account, t.amount,
           t.state, t.reason, t.memo, r.reference_keys, t.tx_sender, t.oracle_answers::jsonb
    FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::timestamptz[],
                $7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[], $12::text[],
                $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[])
         AS t (chain, tx_hash, log_index, block_number, block_hash, block_time, token,
               from_address, to_address, token_account, amount, state, reason, memo, refs_csv,
               transfer_key, tx_sender, oracle_answers)
    CROSS JOIN LATERAL (SELECT CASE WHEN t.refs_csv IS NULL OR t.refs_csv = '' THEN '{}'::text[]
                                    ELSE string_to_array(t.refs_csv, ',') END AS reference_keys) r
    ON CONFLICT (chain, tx_hash, transfer_key) DO UPDATE
        SET log_index = excluded.log_index,
            block_number = excluded.block_number,
            block_hash = excluded.block_hash,
            block_time = excluded.block_time,
            state = CASE WHEN p.state IN ('credited', 'claimed', 'rejected') THEN p.state
                         WHEN excluded.state = 'below_minimum' THEN 'below_minimum'
                         ELSE 'observed' END,
            reason = CASE WHEN p.state IN ('credited', 'claimed', 'rejected')
                          THEN 're-included in block ' || excluded.block_number
                               || ' after a reorg: suspended until it is confirmed there'
                          ELSE excluded.reason END,
            reorged_after_credit = p.reorged_after_credit
                                   OR p.state IN ('credited', 'claimed', 'rejected'),
            relanded_at = CASE WHEN p.state IN ('credited', 'claimed', 'rejected') THEN now()
                               ELSE p.relanded_at END,
            tx_sender = coalesce(excluded.tx_sender, p.tx_sender),
            oracle_answers = coalesce(excluded.oracle_answers, p.oracle_answers),
            orphaned_at = NULL,
            updated_at = now()
        WHERE p.state = 'orphaned'
           OR (p.state IN ('observed', 'below_minimum', 'held')
               AND p.block_hash IS DISTINCT FROM excluded.block_hash)
           OR (p.state IN ('credited', 'claimed', 'rejected')
               AND (p.reorged_after_credit OR p.block_hash IS DISTINCT FROM excluded.block_hash))
    RETURNING p.id, p.chain, p.state, p.amount
)
SELECT id, chain, state, amount FROM up WHERE state NOT IN ('credited', 'claimed', 'rejected');

-- name: credit_payments
-- observed -> credited for the given ids (only rows still observed) that screening
-- passed; $2 their verdict (payments.risk).
UPDATE payments
SET state = 'credited', credited_at = now(), updated_at = now(), reason = NULL,
    risk = $2::jsonb
WHERE id = ANY($1::bigint[]) AND state = 'observed'
RETURNING id, chain, amount, block_number, invoice_id;

-- name: hold_payments
-- observed -> held: a screening rule fired at credit (issue 16). $1 ids, $2 each one's
-- reason, $3 its verdict (payments.risk), aligned. Only rows still observed.
UPDATE payments p
SET state = 'held', held_at = now(), updated_at = now(), reason = h.reason,
    risk = h.risk::jsonb
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS h (id, reason, risk)
WHERE p.id = h.id AND p.state = 'observed'
RETURNING p.id, p.chain, p.amount;

-- name: ledger_screen_facts
-- What screening a payment reads from its row (watcher/ledger_screen.py), for the
-- given ids in the given states.
SELECT id, chain, amount, block_time, observed_at, from_address, tx_sender,
       oracle_answers::text AS oracle_answers
FROM payments WHERE id = ANY ($1::bigint[]) AND state = ANY ($2::text[])
ORDER BY id;

-- name: ledger_payment_ids
-- The ids of transfers by identity ($1 chains, $2 hashes, $3 transfer keys, aligned).
SELECT p.id FROM payments p
JOIN unnest($1::text[], $2::text[], $3::text[]) AS t (chain, tx_hash, transfer_key)
  ON p.chain = t.chain AND p.tx_hash = t.tx_hash AND p.transfer_key = t.transfer_key
ORDER BY p.id;

-- name: orphan_payments
-- observed (or below_minimum, or held) -> orphaned: the block left the canonical chain
-- or never finalized (a held row re-landing is screened again at credit). A re-scan that finds the transfer again records it afresh at its new place.
UPDATE payments
SET state = 'orphaned', orphaned_at = now(), updated_at = now(), reason = $2
WHERE id = ANY($1::bigint[]) AND state IN ('observed', 'below_minimum', 'held')
RETURNING id, chain, amount;

-- name: flag_reorged_credits
-- A credited payment whose block left the canonical chain: flag, never delete, and
-- suspend the token it bought (metering refuses it) until the transfer re-lands and
-- is confirmed. A row flagged before and re-landed since (relanded_at) whose new block
-- is gone too is flagged again.
WITH p AS (
    UPDATE payments
    SET reorged_after_credit = true, relanded_at = NULL, updated_at = now(), reason = $2
    -- A rejected payment is flagged like a credited one (its refund, if any, is the
    -- refunds' business: watcher/refunds/).
    WHERE id = ANY($1::bigint[]) AND state IN ('credited', 'claimed', 'rejected')
      AND (NOT reorged_after_credit OR relanded_at IS NOT NULL)
    RETURNING id, chain, amount, tx_hash
), t AS (
    UPDATE access_tokens a SET suspended_reason = $3
    FROM p WHERE a.payment_id = p.id
    RETURNING a.id, a.payment_id
)
SELECT p.id, p.chain, p.amount, p.tx_hash, t.id AS token_id,
       -- events (issue 14): the authorizations 0008's trigger on the flag moves to
       -- 'reorged' at the end of this statement (read before it runs).
       (SELECT array_agg(a.id ORDER BY a.id) FROM x402_authorizations a
        WHERE a.chain = p.chain AND a.tx_hash = p.tx_hash
          AND a.status IN ('settling', 'settled')) AS x402_reorged
FROM p LEFT JOIN t ON t.payment_id = p.id;

-- name: clear_reorg_flags
-- A flagged payment re-landed and is now confirmed at its new place: the flag goes,
-- and the token it bought is served again.
WITH p AS (
    UPDATE payments
    SET reorged_after_credit = false, updated_at = now(),
        reason = 're-included in block ' || block_number || ' after a reorg, confirmed there'
    WHERE id = ANY($1::bigint[]) AND reorged_after_credit AND relanded_at IS NOT NULL
      AND state IN ('credited', 'claimed', 'rejected')
    RETURNING id, chain, amount, tx_hash, block_number, state
), t AS (
    UPDATE access_tokens a SET suspended_reason = NULL
    FROM p WHERE a.payment_id = p.id
    RETURNING a.id, a.payment_id
)
SELECT p.id, p.chain, p.amount, p.tx_hash, p.block_number, t.id AS token_id,
       -- events (issue 14): the authorizations 0010's trigger on the flag moves back to
       -- 'settled' at the end of this statement (read before it runs).
       (SELECT array_agg(a.id ORDER BY a.id) FROM x402_authorizations a
        WHERE a.chain = p.chain AND a.tx_hash = p.tx_hash AND a.status = 'reorged'
          AND a.payment_id = p.id AND p.state = 'claimed') AS x402_relanded
FROM p LEFT JOIN t ON t.payment_id = p.id;

-- ---------------- stream cursors

-- name: get_cursor
SELECT num, hash, head FROM cursors WHERE chain = $1 AND stream = $2;

-- name: set_cursor
-- When the head moves, the invoice streams hear it at commit (api/live.py: they
-- recompute a pending payment's confirmations): '<chain>:<head>' on watcher_heads,
-- a few bytes, once per new head (identical payloads of one transaction are one).
WITH old AS (
    SELECT head FROM cursors WHERE chain = $1 AND stream = $2
), up AS (
    INSERT INTO cursors (chain, stream, num, hash, head, updated_at)
    VALUES ($1, $2, $3, $4, $5, now())
    ON CONFLICT (chain, stream) DO UPDATE
        SET num = excluded.num, hash = excluded.hash,
            head = coalesce(excluded.head, cursors.head), updated_at = now()
    RETURNING head
)
SELECT pg_notify('watcher_heads', $1 || ':' || up.head)
FROM up LEFT JOIN old ON true
WHERE up.head IS NOT NULL AND up.head IS DISTINCT FROM old.head;

-- ---------------- reads

-- name: payments_by_tx
SELECT * FROM payments WHERE chain = $1 AND tx_hash = $2 ORDER BY log_index;

-- name: record_credited_transfers
-- Transfers already `confirmations` deep in blocks this step verified (ledger.record_credited):
-- written straight as credited, which spares rewriting every row of a large backfill.
-- A row seen before as observed or orphaned is credited at this (canonical) place.
-- A credited row seen at another place, or flagged reorged_after_credit, keeps its
-- state and moves here (relanded_at; the flag is cleared by the same step's
-- evm_relanded_ids). Returns only the rows credited here for the first time. Only
-- transfers screening passed come here ($14 their verdict); a held one never does
-- (ledger.record_credited), and a held row is left as it is.
WITH up AS (
    INSERT INTO payments AS p (chain, tx_hash, log_index, transfer_key, block_number,
                               block_hash, block_time, token, from_address, to_address, amount,
                               state, credited_at, tx_sender, oracle_answers, risk)
    SELECT t.chain, t.tx_hash, t.log_index, t.transfer_key, t.block_number, t.block_hash,
           t.block_time, t.token, t.from_address, t.to_address, t.amount, 'credited', now(),
           t.tx_sender, t.oracle_answers::jsonb, $14::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::text[],
                $7::timestamptz[], $8::text[], $9::text[], $10::numeric[], $11::text[],
                $12::text[], $13::text[])
         AS t (chain, token, tx_hash, log_index, block_number, block_hash, block_time,
               from_address, to_address, amount, transfer_key, tx_sender, oracle_answers)
    ON CONFLICT (chain, tx_hash, transfer_key) DO UPDATE
        SET state = CASE WHEN p.state IN ('credited', 'claimed', 'rejected') THEN p.state
                         ELSE 'credited' END,
            credited_at = CASE WHEN p.state IN ('credited', 'claimed', 'rejected')
                               THEN p.credited_at ELSE now() END,
            risk = CASE WHEN p.state IN ('credited', 'claimed', 'rejected') THEN p.risk
                        ELSE excluded.risk END,
            tx_sender = coalesce(excluded.tx_sender, p.tx_sender),
            oracle_answers = coalesce(excluded.oracle_answers, p.oracle_answers),
            log_index = excluded.log_index,
            block_number = excluded.block_number,
            block_hash = excluded.block_hash,
            block_time = excluded.block_time,
            reason = CASE WHEN p.state IN ('credited', 'claimed', 'rejected')
                          THEN 're-included in block ' || excluded.block_number
                               || ' after a reorg: suspended until it is confirmed there'
                          END,
            reorged_after_credit = p.reorged_after_credit
                                   OR p.state IN ('credited', 'claimed', 'rejected'),
            relanded_at = CASE WHEN p.state IN ('credited', 'claimed', 'rejected') THEN now()
                               ELSE p.relanded_at END,
            orphaned_at = NULL,
            updated_at = now()
        WHERE p.state IN ('observed', 'orphaned')
           OR (p.state IN ('credited', 'claimed', 'rejected')
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
    FROM p, x402_authorizations o  -- o: the row before this statement (events, below)
    WHERE a.chain = p.chain AND a.tx_hash = p.tx_hash AND a.payer = p.from_address
      AND a.pay_to = p.to_address AND a.asset = p.token AND a.amount = p.amount
      AND a.status IN ('settling', 'settled', 'reorged')
      AND (a.payment_id IS NULL OR a.payment_id = p.id) AND o.id = a.id
    RETURNING p.id AS payment_id, a.status,
              'x402 authorization ' || a.id || ': the call was served at settlement' AS reason,
              'evm' AS rail, a.id AS settlement_id, o.status = 'reorged' AS relanded
), svm AS (
    UPDATE x402_solana_settlements s
    SET payment_id = p.id, updated_at = now(),
        status = CASE s.status WHEN 'reorged' THEN 'settled' ELSE s.status END,
        error = CASE s.status WHEN 'reorged' THEN NULL ELSE s.error END
    FROM p, x402_solana_settlements o
    WHERE s.signature = p.tx_hash AND s.destination = p.token_account
      AND s.pay_to = p.to_address AND s.mint = p.token AND s.amount = p.amount
      AND s.status IN ('settling', 'settled', 'reorged')
      AND (s.payment_id IS NULL OR s.payment_id = p.id) AND o.id = s.id
    RETURNING p.id AS payment_id, s.status,
              'x402 solana settlement ' || s.id || ': the call was served at settlement' AS reason,
              'svm' AS rail, s.id AS settlement_id, o.status = 'reorged' AS relanded
), served AS (
    SELECT payment_id, reason, rail, settlement_id, relanded FROM evm WHERE status = 'settled'
    UNION ALL
    SELECT payment_id, reason, rail, settlement_id, relanded FROM svm WHERE status = 'settled'
)
-- events (issue 14): each row also says which settlement went reorged -> settled here
-- (`relanded`), for its x402_settlement.settled event.
UPDATE payments SET state = 'claimed', reason = served.reason, updated_at = now()
FROM served WHERE payments.id = served.payment_id
RETURNING payments.id, served.rail, served.settlement_id, served.relanded;

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
), svm AS (
    UPDATE x402_solana_settlements s
    SET status = 'reorged', updated_at = now(),
        error = 'settlement transaction was dropped with its fork (payment ' || p.id || ')'
    FROM p
    WHERE s.signature = p.tx_hash AND s.status = 'settled'
    RETURNING s.id
)
-- events (issue 14): the rows moved to reorged, for their x402_settlement.reorged events.
SELECT 'evm' AS rail, id AS settlement_id FROM evm
UNION ALL
SELECT 'svm', id FROM svm;

-- ---------------- invoice links (inside the crediting transaction)

-- name: link_invoices
-- The one invoice-matching rule, for two callers in the follower's transaction:
--   * credited payments (ledger.credit): link each to the open (or lately expired)
--     invoice it pays and mark that invoice credited; returns the links;
--   * observed payments (ledger.record -> watcher/invoice_paid.py): write nothing,
--     return the open invoice each would pay once credited, for its invoice.paid;
--     an invoice already announced by a payment still observed (and not orphaned
--     since) is left out: one announcement per pending payment, again after an orphan.
-- EVM: same chain, recipient, token and exact amount. Solana: the invoice's
-- reference among the payment's reference keys, same mint and recipient, at least
-- the invoice amount (references are public: dust with a reference must not take
-- the invoice). Either way the payment's time must fall within [created_at,
-- expires_at + grace]. One payment per invoice. Two equality joins (not one OR) so
-- a 1e5-row backfill credit stays cheap. $1 payment ids (all credited or all
-- observed), $2 the late-payment grace, $3 the amount hold.
WITH given AS (
    SELECT p.id, p.chain, p.family, p.to_address, p.token, p.amount, p.reference_keys,
           p.state, coalesce(p.block_time, p.observed_at) AS paid_at
    FROM payments p
    WHERE p.id = ANY ($1::bigint[]) AND p.state IN ('credited', 'observed')
      AND p.invoice_id IS NULL
), candidates AS (
    SELECT c.id AS payment_id, c.state, i.id AS invoice_id, i.created_at
    FROM given c
    JOIN invoices i
      ON i.chain = c.chain AND i.pay_to = c.to_address AND i.amount = c.amount
     AND i.token = c.token
    WHERE c.family = 'evm' AND i.status IN ('open', 'expired')
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
    SELECT c.id, c.state, i.id, i.created_at
    FROM given c
    CROSS JOIN LATERAL unnest(c.reference_keys) AS r (key)
    JOIN invoices i ON i.reference = r.key
    WHERE c.family = 'solana' AND i.chain = c.chain AND i.status IN ('open', 'expired')
      AND i.pay_to = c.to_address AND i.token = c.token AND c.amount >= i.amount
      AND c.paid_at >= date_trunc('second', i.created_at)
      AND c.paid_at <= i.expires_at + $2::interval
), pick AS (
    SELECT DISTINCT ON (payment_id) payment_id, invoice_id, state
    FROM candidates c
    WHERE NOT EXISTS (SELECT 1 FROM payments o WHERE o.invoice_id = c.invoice_id)
    ORDER BY payment_id, created_at
), one AS (
    SELECT DISTINCT ON (invoice_id) payment_id, invoice_id, state
    FROM pick ORDER BY invoice_id, payment_id
), linked AS (
    UPDATE payments p SET invoice_id = one.invoice_id, updated_at = now()
    FROM one WHERE p.id = one.payment_id AND one.state = 'credited'
    RETURNING p.id, p.invoice_id
), marked AS (
    UPDATE invoices i SET status = 'credited'
    FROM linked WHERE i.id = linked.invoice_id
    RETURNING i.id AS invoice_id, linked.id AS payment_id
)
SELECT invoice_id, payment_id FROM marked
UNION ALL
SELECT one.invoice_id, one.payment_id
FROM one JOIN invoices i ON i.id = one.invoice_id
WHERE one.state = 'observed' AND i.status = 'open'
  AND NOT EXISTS (
      SELECT 1 FROM events e
      JOIN payments q ON q.id = (e.data ->> 'payment_id')::bigint AND q.state = 'observed'
      WHERE e.resource = 'invoice' AND e.resource_id = i.id::text AND e.type = 'invoice.paid'
        AND NOT EXISTS (SELECT 1 FROM events o
                        WHERE o.resource = 'payment' AND o.resource_id = q.id::text
                          AND o.type = 'payment.orphaned' AND o.id > e.id));

-- ---------------- claims, operator settle/invalidate, invoice expiry (run only by ledger.py)

-- name: api_claim_payment
-- One credited payment -> one token, in one statement (atomic, one round trip):
-- lock the payment, insert the token (the unique payment_id is the backstop),
-- then mark the payment and its invoice claimed. No row: nothing was issued
-- (see api_claim_refusal for why).
-- $1 token hash, $2 payment id, $3 price per call, $4 lifetime, $5 most requests,
-- $6 the screen's claim cutoff (issue 16: a payment whose block is older can no
-- longer be claimed, only refunded; NULL: no age limit).
WITH p AS (
    SELECT id, chain, tx_hash, from_address, amount, invoice_id
    FROM payments WHERE id = $2 AND state = 'credited' AND amount >= $3
      AND NOT reorged_after_credit  -- off the canonical chain: buys nothing (yet)
      AND ($6::timestamptz IS NULL OR coalesce(block_time, observed_at) >= $6::timestamptz)
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
SELECT t.id, t.requests_total, t.remaining, t.expires_at, p.chain, p.tx_hash, p.invoice_id
FROM t JOIN p ON p.id = t.payment_id;

-- name: api_admin_settle
-- By hand: a payment the followers could not credit (still observed, orphaned,
-- below minimum, invalidated) is credited, once screening passed it ($3 the verdict).
-- Never a held or rejected one: those are released or stay refundable (issue 16).
UPDATE payments
SET state = 'credited', credited_at = coalesce(credited_at, now()), updated_at = now(),
    reason = $2, risk = $3::jsonb
WHERE id = $1 AND state IN ('observed', 'orphaned', 'below_minimum', 'not_ours')
RETURNING id, chain, amount, state;

-- name: api_admin_hold
-- By hand, but a screening rule fires: the payment an operator settles is held for
-- review instead ($2 the rules' reason, $3 the verdict). The states of api_admin_settle.
UPDATE payments
SET state = 'held', held_at = now(), updated_at = now(), reason = $2, risk = $3::jsonb
WHERE id = $1 AND state IN ('observed', 'orphaned', 'below_minimum', 'not_ours')
RETURNING id, chain, amount, state;

-- name: release_payment
-- held -> credited: an operator reviewed the hold and let it through ($2 operator,
-- $3 note). Then as any credit (ledger.release). Only a held row, once.
UPDATE payments
SET state = 'credited', credited_at = coalesce(credited_at, now()), updated_at = now(),
    reviewed_by = $2::text, reviewed_at = now(), review_note = $3::text,
    reason = 'released by ' || $2::text || ': ' || $3::text
WHERE id = $1 AND state = 'held'
RETURNING id, chain, amount, state;

-- name: reject_payment
-- held -> rejected: an operator reviewed the hold and refused it ($2 operator, $3 note).
-- Never claimable; refundable (watcher/refunds/). Only a held row, once.
UPDATE payments
SET state = 'rejected', updated_at = now(),
    reviewed_by = $2::text, reviewed_at = now(), review_note = $3::text,
    reason = 'rejected by ' || $2::text || ': ' || $3::text
WHERE id = $1 AND state = 'held'
RETURNING id, chain, amount, state;

-- name: ledger_review_audit
-- The audit row of a release or reject ($1 action, $2 payment, $3 from, $4 to, $5 the
-- note, $6 client, $7 operator); subject is the payment id (admin_audit_what, 0021).
INSERT INTO admin_audit (action, payment_id, from_state, to_state, reason, client, operator,
                         subject)
VALUES ($1, $2::bigint, $3, $4, $5, $6, $7, $2::bigint::text)
RETURNING id, at;

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

-- name: api_expire_invoices
-- What cleanup_expired_x402_payments() (0002) does, returning the ids for their
-- invoice.expired events ($1 the late-payment grace).
UPDATE invoices SET status = 'expired'
WHERE status = 'open' AND expires_at + $1::interval < now()
RETURNING id;

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

-- ---------------- holds: the review queue (watcher/holds.py: the admin API and CLI)

-- name: holds_list
-- Payments held for review, oldest hold first ($1 at most this many).
SELECT id, chain, tx_hash, log_index, block_number, block_time, token, from_address,
       tx_sender, to_address, amount, state, reason, risk::text AS risk, held_at,
       observed_at, reviewed_by, reviewed_at, review_note, invoice_id
FROM payments WHERE state = 'held'
ORDER BY held_at, id
LIMIT $1;

-- name: holds_payment
-- One payment as the review shows it ($1 id).
SELECT id, chain, tx_hash, log_index, block_number, block_time, token, from_address,
       tx_sender, to_address, amount, state, reason, risk::text AS risk, held_at,
       observed_at, reviewed_by, reviewed_at, review_note, invoice_id
FROM payments WHERE id = $1;

-- name: holds_gauge
-- Per network: payments held now and how long the oldest has waited (the metric).
SELECT n.name AS chain, count(p.id)::int AS held,
       coalesce(extract(epoch FROM now() - min(p.held_at)), 0)::float8 AS oldest_seconds
FROM networks n LEFT JOIN payments p ON p.chain = n.name AND p.state = 'held'
GROUP BY n.name;
