-- 0009: standard x402 on Solana (`exact` scheme).
--
-- The payer sends a transaction it has signed: compute budget, one TransferChecked
-- of the price from its token account to our associated token account, and a memo
-- carrying a fresh nonce; the fee payer is our key, whose signature is missing. We
-- check it, co-sign, simulate, and claim a row here before broadcasting. The
-- transaction id is our own signature, so it is known (and stored) before the
-- transaction exists anywhere else.
--
-- The Solana follower credits the transfer at `finalized` like any payment; the
-- triggers below link that payment row here in the follower's transaction and,
-- when the call was served, mark it 'claimed' at once, so the same transfer can
-- never also buy an access token.
--
-- status: settling (claimed, signed, being broadcast)
--      -> settled (confirmed without error: the call was served) | failed (never served)
--      settled -> reorged (the transaction was dropped with its fork: never counted as
--                          paid; the served call is a loss to review)
-- A row left 'settling' was never served: the API could not tell in time whether the
-- transaction landed (it answered 503). If it lands, the follower's credit is linked
-- but stays an ordinary credited payment the payer can still claim for a token.

CREATE TABLE x402_solana_settlements (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    network       text         NOT NULL CHECK (network ~ '^solana:[1-9A-HJ-NP-Za-km-z]{32}$'),
    mint          text         NOT NULL,
    payer         text         NOT NULL,   -- the transfer's authority (signer)
    source        text         NOT NULL,   -- the payer's token account
    pay_to        text         NOT NULL,   -- our owner (wallet)
    destination   text         NOT NULL,   -- our associated token account
    amount        token_amount NOT NULL,
    nonce         text         NOT NULL,   -- the memo; the message hash when there is none
    message_hash  text         NOT NULL UNIQUE,  -- hex SHA-256 of the signed message
    signature     text         NOT NULL UNIQUE   -- the transaction id (our fee payer signature)
                  CHECK (signature ~ '^[1-9A-HJ-NP-Za-km-z]{64,88}$'),
    fee_payer     text         NOT NULL,
    x402_version  smallint     NOT NULL CHECK (x402_version IN (1, 2)),
    resource      text         NOT NULL,
    status        text         NOT NULL DEFAULT 'settling'
                  CHECK (status IN ('settling', 'settled', 'failed', 'reorged')),
    error         text,
    failed_on_chain boolean    NOT NULL DEFAULT false,  -- landed with an error: we paid the fee
    payment_id    bigint       UNIQUE REFERENCES payments (id) DEFERRABLE INITIALLY DEFERRED,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    -- The memo nonce: the same payer cannot pay twice with one nonce, even in a new
    -- transaction (another blockhash) that would otherwise be a fresh message.
    CONSTRAINT x402_solana_nonce_uq UNIQUE (mint, payer, nonce)
);
CREATE INDEX x402_solana_settlements_status_idx ON x402_solana_settlements (status, created_at);
-- One settlement in flight per source token account (api/x402_svm.py claims under an
-- advisory lock): concurrent payments from one balance cannot all pass simulation and
-- then fail on chain at our expense.
CREATE INDEX x402_solana_settlements_source_idx ON x402_solana_settlements (source, created_at);

-- The payment being credited is the transfer of a settlement we broadcast: link it,
-- and when the call was served, mark it claimed. Matched on the transaction id, our
-- token account, mint and amount; not on the payer, since the follower records the
-- owner whose balance went down, which is not the signer when a delegate pays.
CREATE FUNCTION x402_solana_link_credit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    settlement_id bigint;
    settlement_status text;
BEGIN
    UPDATE x402_solana_settlements s
    SET payment_id = NEW.id, updated_at = now(),
        status = CASE s.status WHEN 'reorged' THEN 'settled' ELSE s.status END,
        error = CASE s.status WHEN 'reorged' THEN NULL ELSE s.error END
    WHERE s.signature = NEW.tx_hash AND s.destination = NEW.token_account
      AND s.pay_to = NEW.to_address AND s.mint = NEW.token AND s.amount = NEW.amount
      AND s.status IN ('settling', 'settled', 'reorged')
      AND (s.payment_id IS NULL OR s.payment_id = NEW.id)
    RETURNING s.id, s.status INTO settlement_id, settlement_status;
    IF settlement_id IS NOT NULL AND settlement_status = 'settled' THEN
        NEW.state := 'claimed';
        NEW.reason := 'x402 solana settlement ' || settlement_id
                      || ': the call was served at settlement';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_x402_solana_link_credit
    BEFORE UPDATE OF state ON payments
    FOR EACH ROW WHEN (NEW.chain = 'solana' AND NEW.state = 'credited'
                       AND OLD.state IS DISTINCT FROM 'credited')
    EXECUTE FUNCTION x402_solana_link_credit();

CREATE TRIGGER payments_x402_solana_link_credit_insert
    BEFORE INSERT ON payments
    FOR EACH ROW WHEN (NEW.chain = 'solana' AND NEW.state = 'credited')
    EXECUTE FUNCTION x402_solana_link_credit();

-- A served settlement's transaction was dropped with its fork: never counted as paid.
-- A row still 'settling' is the API's to decide (it may yet confirm on the new fork).
CREATE FUNCTION x402_solana_mark_reorged() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE x402_solana_settlements s
    SET status = 'reorged', updated_at = now(),
        error = 'settlement transaction was dropped with its fork (payment ' || NEW.id || ')'
    WHERE s.signature = NEW.tx_hash AND s.status = 'settled';
    RETURN NEW;
END $$;

CREATE TRIGGER payments_x402_solana_orphaned
    AFTER UPDATE OF state ON payments
    FOR EACH ROW WHEN (NEW.chain = 'solana' AND NEW.state = 'orphaned'
                       AND OLD.state IS DISTINCT FROM 'orphaned')
    EXECUTE FUNCTION x402_solana_mark_reorged();
