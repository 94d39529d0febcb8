-- Refunded money is not revenue (issue 16). A refund counts from its request on (the calls
-- it takes are void at once) unless it failed and is known to have moved nothing: the
-- rule of the refund ledger's refund_totals. The 24-hour stats gain what was given back
-- and what is left; the top payers rank by what each one's payments still bring in.
-- (The daily roll-up, x402_analytics, still sums credited payments whole.)

CREATE VIEW v_x402_refunded AS
SELECT r.payment_id, sum(r.amount) AS amount
FROM refunds r
WHERE r.status <> 'failed' OR r.detail->>'moved_nothing' IS DISTINCT FROM 'true'
GROUP BY r.payment_id;

CREATE OR REPLACE VIEW v_x402_stats_24h AS
SELECT c.name AS chain,
       count(p.id) FILTER (WHERE p.state IN ('credited', 'claimed'))              AS payments_credited,
       count(p.id) FILTER (WHERE p.state = 'observed')                           AS payments_pending,
       count(p.id) FILTER (WHERE p.state = 'orphaned')                           AS payments_orphaned,
       count(p.id) FILTER (WHERE p.state = 'below_minimum')                      AS payments_below_minimum,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) AS amount_credited,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) / 1000000.0
                                                                                  AS amount_credited_usd,
       count(DISTINCT p.from_address) FILTER (WHERE p.state IN ('credited', 'claimed')) AS unique_payers,
       coalesce(sum(rf.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) AS amount_refunded,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0)
         - coalesce(sum(rf.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) AS amount_net
FROM networks c
LEFT JOIN payments p ON p.chain = c.name AND p.observed_at > now() - interval '24 hours'
LEFT JOIN v_x402_refunded rf ON rf.payment_id = p.id
GROUP BY c.name;

CREATE OR REPLACE VIEW v_x402_top_payers AS
SELECT p.chain,
       p.from_address        AS payer,
       count(*)              AS payments,
       sum(p.amount) - coalesce(sum(rf.amount), 0)            AS amount_total,
       (sum(p.amount) - coalesce(sum(rf.amount), 0)) / 1000000.0 AS amount_total_usd,
       max(p.credited_at)    AS last_payment_at
FROM payments p
LEFT JOIN v_x402_refunded rf ON rf.payment_id = p.id
WHERE p.state IN ('credited', 'claimed') AND p.from_address IS NOT NULL
GROUP BY p.chain, p.from_address
ORDER BY amount_total DESC;
