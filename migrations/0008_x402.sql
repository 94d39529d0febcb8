-- 0008: standard x402 (`exact` scheme, EIP-3009 transferWithAuthorization).
--
-- One row per authorization a payer sent us. The row is claimed (INSERT) before
-- anything is settled, so the unique nonce refuses a replayed header and a
-- concurrent twin alike. The settlement transaction's Transfer log is found and
-- credited by the EVM follower like any other payment; the triggers below link
-- that payment row here in the follower's own transaction, and mark it
-- 'claimed' at once, because the call it paid for was already served: the
-- same transfer can never also be claimed for an access token.
--
-- status: verified (signature, amount, window, balance checked; nonce claimed)
--      -> settling (transaction being submitted)
--      -> settled (receipt status 1: the call was served) | failed (never served)
--      settled -> reorged (its payment was orphaned or reorged after credit:
--                          never counted as paid; the served call is a loss to review)

CREATE TABLE x402_authorizations (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain          text         NOT NULL CHECK (chain IN ('base', 'ethereum')),
    asset          evm_address  NOT NULL,          -- the EIP-3009 token (USDC contract)
    payer          evm_address  NOT NULL,          -- authorization.from
    pay_to         evm_address  NOT NULL,          -- authorization.to (ours)
    amount         token_amount NOT NULL,
    nonce          text         NOT NULL CHECK (nonce ~ '^0x[0-9a-f]{64}$'),
    valid_after    numeric(78, 0) NOT NULL,
    valid_before   numeric(78, 0) NOT NULL,
    signature      text         NOT NULL,
    x402_version   smallint     NOT NULL CHECK (x402_version IN (1, 2)),
    resource       text         NOT NULL,
    settled_by     text         NOT NULL CHECK (settled_by IN ('relayer', 'facilitator')),
    status         text         NOT NULL DEFAULT 'verified'
                   CHECK (status IN ('verified', 'settling', 'settled', 'failed', 'reorged')),
    error          text,                           -- why failed / reorged
    tx_hash        text         CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    -- Deferred: the link is written by a BEFORE INSERT trigger on payments, before the
    -- payment row itself exists; the reference is checked at commit.
    payment_id     bigint       UNIQUE REFERENCES payments (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     timestamptz  NOT NULL DEFAULT now(),
    updated_at     timestamptz  NOT NULL DEFAULT now(),
    -- EIP-3009 nonces are per authorizer per token contract: the contract refuses a
    -- second use, and so do we, before any transaction is sent.
    CONSTRAINT x402_authorizations_nonce_uq UNIQUE (chain, asset, payer, nonce),
    CHECK (status <> 'settled' OR tx_hash IS NOT NULL)
);
CREATE INDEX x402_authorizations_tx_idx ON x402_authorizations (chain, tx_hash);
CREATE INDEX x402_authorizations_status_idx ON x402_authorizations (status, created_at);

-- A payment being credited that is the Transfer of an authorization we settled:
-- link it, and when the call was served (settled), mark it claimed.
CREATE FUNCTION x402_link_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    auth_id bigint;
    auth_status text;
BEGIN
    IF NEW.state = 'credited' AND NEW.chain <> 'solana' THEN
        UPDATE x402_authorizations a
        SET payment_id = NEW.id, updated_at = now(),
            status = CASE a.status WHEN 'reorged' THEN 'settled' ELSE a.status END,
            error = CASE a.status WHEN 'reorged' THEN NULL ELSE a.error END
        WHERE a.chain = NEW.chain AND a.tx_hash = NEW.tx_hash AND a.payer = NEW.from_address
          AND a.pay_to = NEW.to_address AND a.asset = NEW.token AND a.amount = NEW.amount
          AND a.status IN ('settling', 'settled', 'reorged')
          AND (a.payment_id IS NULL OR a.payment_id = NEW.id)
        RETURNING a.id, a.status INTO auth_id, auth_status;
        -- Only a served call consumes the payment. Still 'settling' (our receipt is on its
        -- way, or the API died before serving): linked, but left credited; marking it
        -- settled claims it, and if that never happens the payer can claim it as usual.
        IF auth_id IS NOT NULL AND auth_status = 'settled' THEN
            NEW.state := 'claimed';
            NEW.reason := 'x402 authorization ' || auth_id || ': the call was served at settlement';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_x402_link_credit
    BEFORE UPDATE OF state ON payments
    FOR EACH ROW WHEN (NEW.state = 'credited' AND OLD.state IS DISTINCT FROM 'credited')
    EXECUTE FUNCTION x402_link_credit();

-- The EVM follower inserts transfers that are already deep enough straight as
-- credited (a backfill after downtime): those must be linked just the same, or a
-- served call's transfer would stay claimable for a token as well.
CREATE TRIGGER payments_x402_link_credit_insert
    BEFORE INSERT ON payments
    FOR EACH ROW WHEN (NEW.state = 'credited')
    EXECUTE FUNCTION x402_link_credit();

-- The settlement's payment left the canonical chain: never counted as paid.
CREATE FUNCTION x402_mark_reorged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE x402_authorizations a
    SET status = 'reorged', updated_at = now(),
        error = 'settlement transaction left the canonical chain (payment ' || NEW.id || ')'
    WHERE a.chain = NEW.chain AND a.tx_hash = NEW.tx_hash AND a.status IN ('settling', 'settled');
    RETURN NEW;
END $$;

CREATE TRIGGER payments_x402_orphaned
    AFTER UPDATE OF state ON payments
    FOR EACH ROW WHEN (NEW.state = 'orphaned' AND OLD.state IS DISTINCT FROM 'orphaned')
    EXECUTE FUNCTION x402_mark_reorged();

CREATE TRIGGER payments_x402_reorged_after_credit
    AFTER UPDATE OF reorged_after_credit ON payments
    FOR EACH ROW WHEN (NEW.reorged_after_credit AND NOT OLD.reorged_after_credit)
    EXECUTE FUNCTION x402_mark_reorged();
