-- 0002: the reporting objects the old system's dashboards and admin stats read.
-- Same names as the seed so existing queries keep working; they now read the
-- ledger of 0001. Amounts stay integers in base units; *_usd columns are
-- numeric computed from them (exact, never float).

-- Tokens that can still be used, with the payment that bought them.
CREATE VIEW v_x402_active_payments AS
SELECT t.id              AS token_id,
       p.id              AS payment_id,
       p.chain,
       p.tx_hash,
       p.from_address    AS payer,
       p.amount,
       p.amount / 1000000.0 AS amount_usd,
       t.requests_total,
       t.remaining,
       t.created_at,
       t.expires_at
FROM access_tokens t
LEFT JOIN payments p ON p.id = t.payment_id
WHERE t.expires_at > now() AND t.remaining > 0;

-- The last 24 hours, per chain.
CREATE VIEW v_x402_stats_24h AS
SELECT c.chain,
       count(p.id) FILTER (WHERE p.state IN ('credited', 'claimed'))              AS payments_credited,
       count(p.id) FILTER (WHERE p.state = 'observed')                           AS payments_pending,
       count(p.id) FILTER (WHERE p.state = 'orphaned')                           AS payments_orphaned,
       count(p.id) FILTER (WHERE p.state = 'below_minimum')                      AS payments_below_minimum,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) AS amount_credited,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) / 1000000.0
                                                                                  AS amount_credited_usd,
       count(DISTINCT p.from_address) FILTER (WHERE p.state IN ('credited', 'claimed')) AS unique_payers
FROM (VALUES ('base'), ('ethereum'), ('solana')) AS c (chain)
LEFT JOIN payments p ON p.chain = c.chain AND p.observed_at > now() - interval '24 hours'
GROUP BY c.chain;

-- Who pays the most (credited payments only).
CREATE VIEW v_x402_top_payers AS
SELECT p.chain,
       p.from_address        AS payer,
       count(*)              AS payments,
       sum(p.amount)         AS amount_total,
       sum(p.amount) / 1000000.0 AS amount_total_usd,
       max(p.credited_at)    AS last_payment_at
FROM payments p
WHERE p.state IN ('credited', 'claimed') AND p.from_address IS NOT NULL
GROUP BY p.chain, p.from_address
ORDER BY amount_total DESC;

-- Paid-endpoint usage.
CREATE VIEW v_x402_endpoint_stats AS
SELECT u.endpoint,
       count(*)                                                    AS calls,
       count(*) FILTER (WHERE u.created_at > now() - interval '24 hours') AS calls_24h,
       coalesce(sum(u.cost) FILTER (WHERE NOT u.refunded), 0)      AS units_charged,
       count(*) FILTER (WHERE u.refunded)                          AS refunds,
       count(DISTINCT u.token_id)                                  AS tokens,
       max(u.created_at)                                           AS last_call_at
FROM token_usage u
GROUP BY u.endpoint;

-- Daily roll-up, refreshed by update_x402_analytics().
CREATE TABLE x402_analytics (
    day               date         NOT NULL,
    chain             text         NOT NULL CHECK (chain IN ('base', 'ethereum', 'solana')),
    payments          integer      NOT NULL DEFAULT 0,
    amount            numeric      NOT NULL DEFAULT 0 CHECK (amount >= 0 AND amount = trunc(amount)),
    unique_payers     integer      NOT NULL DEFAULT 0,
    tokens_issued     integer      NOT NULL DEFAULT 0,
    requests_used     bigint       NOT NULL DEFAULT 0,
    updated_at        timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (day, chain)
);

-- Recompute the roll-up for every day since `since` (default: yesterday and
-- today). Idempotent: run it as often as you like. Returns rows written.
CREATE FUNCTION update_x402_analytics(since date DEFAULT current_date - 1)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    written integer;
BEGIN
    INSERT INTO x402_analytics AS a (day, chain, payments, amount, unique_payers,
                                     tokens_issued, requests_used, updated_at)
    SELECT d.day, c.chain,
           coalesce(pay.payments, 0), coalesce(pay.amount, 0), coalesce(pay.unique_payers, 0),
           coalesce(tok.tokens_issued, 0), coalesce(use.requests_used, 0), now()
    FROM generate_series(since, current_date, interval '1 day') AS d (day)
    CROSS JOIN (VALUES ('base'), ('ethereum'), ('solana')) AS c (chain)
    LEFT JOIN LATERAL (
        SELECT count(*) AS payments, sum(p.amount) AS amount,
               count(DISTINCT p.from_address) AS unique_payers
        FROM payments p
        WHERE p.chain = c.chain AND p.state IN ('credited', 'claimed')
          AND p.credited_at >= d.day AND p.credited_at < d.day + interval '1 day'
    ) pay ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS tokens_issued
        FROM access_tokens t JOIN payments p ON p.id = t.payment_id
        WHERE p.chain = c.chain
          AND t.created_at >= d.day AND t.created_at < d.day + interval '1 day'
    ) tok ON true
    LEFT JOIN LATERAL (
        SELECT sum(u.cost) AS requests_used
        FROM token_usage u
        JOIN access_tokens t ON t.id = u.token_id
        JOIN payments p ON p.id = t.payment_id
        WHERE p.chain = c.chain AND NOT u.refunded
          AND u.created_at >= d.day AND u.created_at < d.day + interval '1 day'
    ) use ON true
    ON CONFLICT (day, chain) DO UPDATE
        SET payments = excluded.payments, amount = excluded.amount,
            unique_payers = excluded.unique_payers, tokens_issued = excluded.tokens_issued,
            requests_used = excluded.requests_used, updated_at = excluded.updated_at;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END;
$$;

-- Housekeeping. Never deletes money records: payments and tokens are the
-- ledger. It closes open invoices whose validity plus a grace window for late
-- payments has passed. Returns the number of invoices expired.
CREATE FUNCTION cleanup_expired_x402_payments(grace interval DEFAULT interval '1 hour')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    expired integer;
BEGIN
    UPDATE invoices SET status = 'expired'
    WHERE status = 'open' AND expires_at + grace < now();
    GET DIAGNOSTICS expired = ROW_COUNT;
    RETURN expired;
END;
$$;
