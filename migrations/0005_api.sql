-- 0005: what the thin API needs beyond the ledger of 0001.
--
--   * api_rate_limits: fixed one-minute windows per (bucket, client), shared by
--     every API process through this table (no process-local counters);
--   * admin_audit: one row per manual action on a payment (settle/invalidate),
--     never updated or deleted;
--   * an index for matching a credited EVM payment to its open invoice
--     (chain, pay_to, exact amount); Solana matches by the unique reference.

CREATE TABLE api_rate_limits (
    bucket        text        NOT NULL,           -- e.g. 'verify-payment'
    client        text        NOT NULL,           -- client address as the server saw it
    window_start  timestamptz NOT NULL,
    hits          integer     NOT NULL CHECK (hits > 0),
    PRIMARY KEY (bucket, client, window_start)
);
CREATE INDEX api_rate_limits_window_idx ON api_rate_limits (window_start);

CREATE TABLE admin_audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text        NOT NULL CHECK (action IN ('settle', 'invalidate')),
    payment_id  bigint      NOT NULL REFERENCES payments (id),
    from_state  text        NOT NULL,
    to_state    text        NOT NULL,
    reason      text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    client      text                                -- who asked (address), for the record
);
CREATE INDEX admin_audit_payment_idx ON admin_audit (payment_id);

CREATE INDEX invoices_match_idx ON invoices (chain, pay_to, amount) WHERE status IN ('open', 'expired');
