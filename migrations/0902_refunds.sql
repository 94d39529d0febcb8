-- Refunds (issue 16, docs/holds-and-refunds.md "Refunds"): money we send back for a
-- payment. One row per refund, keyed by the operator's idempotency key (a repeat request
-- returns the row, never a second refund). The row is the exactly-once record of the
-- sender: the signed transaction and its hash are committed ('signed') before anything
-- is broadcast, so a crash leaves bytes to re-send, never a reason to sign again.
-- The followers link the outgoing transfer they see (out_*) and confirm it when deep.

CREATE TABLE refunds (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    refund_key       text         NOT NULL UNIQUE CHECK (refund_key ~ '^[A-Za-z0-9._:-]{1,100}$'),
    payment_id       bigint       NOT NULL REFERENCES payments (id),
    chain            text         NOT NULL,
    family           text         NOT NULL,
    kind             text         NOT NULL CHECK (kind IN ('whole', 'unconsumed', 'excess')),
    amount           token_amount NOT NULL CHECK (amount > 0),
    -- calls of the payment's token voided by this refund: taken from the token at once
    -- (token_id set), or from the token a later claim mints (token_id NULL); never given
    -- back, even when the refund fails
    calls            integer      NOT NULL DEFAULT 0 CHECK (calls >= 0),
    token_id         bigint       REFERENCES access_tokens (id),  -- the token they came from
    token            text         NOT NULL,   -- USDC contract or mint that is sent
    destination      text         NOT NULL,   -- who receives (EVM: lowercase 0x)
    proof            text         NOT NULL CHECK (proof IN ('source', 'signature', 'claim_secret')),
    status           text         NOT NULL DEFAULT 'requested' CHECK (status IN (
                         'requested', 'signed', 'sent', 'exported', 'confirmed', 'failed')),
    reason           text         NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    requested_by     text         NOT NULL CHECK (length(requested_by) BETWEEN 1 AND 64),
    wallet           text,                    -- the address that sends (signs) it
    nonce            bigint       CHECK (nonce >= 0),      -- EVM account nonce once signed
    raw_tx           text,                    -- the signed transaction, as broadcast
    tx_hash          text,                    -- its hash (EVM) or signature (Solana)
    detail           jsonb,                   -- family-specific sender data (fees, blockhash)
    out_tx_hash      text,                    -- the outgoing transfer a follower saw
    out_log_index    integer,
    out_block_number bigint,
    out_block_hash   text,
    failure          text,                    -- why it failed (status 'failed')
    last_error       text,                    -- the last transient problem (retried)
    created_at       timestamptz  NOT NULL DEFAULT now(),
    signed_at        timestamptz,
    sent_at          timestamptz,
    exported_at      timestamptz,
    confirmed_at     timestamptz,
    failed_at        timestamptz,
    updated_at       timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT refunds_network_fk FOREIGN KEY (chain, family) REFERENCES networks (name, family),
    CONSTRAINT refunds_signed_has_bytes
        CHECK (status NOT IN ('signed', 'sent') OR (raw_tx IS NOT NULL AND tx_hash IS NOT NULL)),
    CONSTRAINT refunds_confirmed_is_linked
        CHECK (status <> 'confirmed' OR out_tx_hash IS NOT NULL),
    CONSTRAINT refunds_failed_says_why CHECK (status <> 'failed' OR failure IS NOT NULL),
    CONSTRAINT refunds_evm_addresses CHECK (
        family <> 'evm' OR (destination ~ '^0x[0-9a-f]{40}$' AND token ~ '^0x[0-9a-f]{40}$'
                            AND (wallet IS NULL OR wallet ~ '^0x[0-9a-f]{40}$')
                            AND (tx_hash IS NULL OR tx_hash ~ '^0x[0-9a-f]{64}$')))
);
CREATE TRIGGER refunds_family BEFORE INSERT ON refunds
    FOR EACH ROW EXECUTE FUNCTION fill_network_family();
CREATE INDEX refunds_payment_idx ON refunds (payment_id);
CREATE INDEX refunds_open_idx ON refunds (chain, status)
    WHERE status IN ('requested', 'signed', 'sent', 'exported');
-- One transaction per nonce of a wallet; one refund per outgoing transfer.
CREATE UNIQUE INDEX refunds_nonce_uq ON refunds (chain, wallet, nonce) WHERE nonce IS NOT NULL;
CREATE UNIQUE INDEX refunds_tx_uq ON refunds (chain, tx_hash) WHERE tx_hash IS NOT NULL;
CREATE UNIQUE INDEX refunds_out_uq ON refunds (chain, out_tx_hash, out_log_index)
    WHERE out_tx_hash IS NOT NULL;

-- A payment refunded before its token was claimed: the claim mints only the calls the
-- refunds left (none after a whole refund). The claim statement sees no token and refuses,
-- so money given back can never also buy calls.
CREATE FUNCTION refunds_shrink_claim() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    voided integer;
    whole  boolean;
BEGIN
    IF NEW.payment_id IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT coalesce(sum(calls), 0), coalesce(bool_or(kind = 'whole' AND status <> 'failed'), false)
    INTO voided, whole
    FROM refunds WHERE payment_id = NEW.payment_id AND token_id IS NULL;
    IF whole OR NEW.requests_total - voided <= 0 THEN
        RETURN NULL;
    END IF;
    NEW.requests_total := NEW.requests_total - voided;
    NEW.remaining := least(NEW.remaining, NEW.requests_total);
    RETURN NEW;
END $$;
CREATE TRIGGER access_tokens_refunded BEFORE INSERT ON access_tokens
    FOR EACH ROW EXECUTE FUNCTION refunds_shrink_claim();
