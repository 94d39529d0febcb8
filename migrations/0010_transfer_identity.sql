-- 0010: a payment keeps its identity when a reorg re-includes its transaction elsewhere.
--
-- Until now a payment was keyed by (chain, tx_hash, log_index). A log index is a
-- position in a block, not an identity: the same signed transaction re-mined on
-- another branch (anyone can re-broadcast a dropped one) usually lands at another
-- index, which made a second, claimable row for one transfer; and a batch
-- transaction whose logs shifted revived a row with another transfer's amount.
--
-- The identity is now (chain, tx_hash, transfer_key):
--   * EVM: '<from>:<to>:<amount>:<n>', n counting identical (from, to, amount)
--     transfers earlier in the same transaction. A transaction hash commits to the
--     signed transaction, and the same execution emits the same transfers in the
--     same order wherever it lands; a re-execution that moves another amount (or
--     fails) is, rightly, not the same payment.
--   * Solana: the account index (a signature's message fixes its accounts).
-- log_index and the block columns say where the transfer is now.
--
-- relanded_at: when a credited payment flagged reorged_after_credit was seen again on
-- the canonical chain; the flag is cleared once that new place is confirmed.
-- access_tokens.suspended_reason: set while the payment that bought the token is off
-- the canonical chain; metering refuses a suspended token.

ALTER TABLE payments ADD COLUMN transfer_key text;
ALTER TABLE payments ADD COLUMN relanded_at timestamptz;

-- Existing rows: EVM hashes start with 0x, which no base58 signature can.
UPDATE payments p SET transfer_key = k.key
FROM (
    SELECT id,
           CASE WHEN starts_with(tx_hash, '0x')
                THEN coalesce(from_address, '') || ':' || to_address || ':'
                     || amount::numeric(78, 0)::text || ':'
                     || (row_number() OVER (PARTITION BY chain, tx_hash, from_address,
                                                         to_address, amount
                                            ORDER BY log_index, id) - 1)::text
                ELSE log_index::text END AS key
    FROM payments
) k
WHERE p.id = k.id;

-- A row written without a key (by hand, an old script) is keyed by its position.
CREATE FUNCTION payments_default_transfer_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.transfer_key := NEW.log_index::text;
    RETURN NEW;
END $$;

CREATE TRIGGER payments_default_transfer_key
    BEFORE INSERT ON payments
    FOR EACH ROW WHEN (NEW.transfer_key IS NULL)
    EXECUTE FUNCTION payments_default_transfer_key();

ALTER TABLE payments ALTER COLUMN transfer_key SET NOT NULL;
ALTER TABLE payments ADD CONSTRAINT payments_transfer_key_length
    CHECK (octet_length(transfer_key) BETWEEN 1 AND 200);
ALTER TABLE payments DROP CONSTRAINT payments_location_uq;
ALTER TABLE payments ADD CONSTRAINT payments_transfer_uq UNIQUE (chain, tx_hash, transfer_key);

ALTER TABLE access_tokens ADD COLUMN suspended_reason text;

-- A re-landed settlement whose call was served (its payment consumed) counts as paid
-- again; 0008 marked it 'reorged' when the payment left the canonical chain.
CREATE FUNCTION x402_mark_relanded() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE x402_authorizations a
    SET status = 'settled', updated_at = now(), error = NULL
    WHERE a.chain = NEW.chain AND a.tx_hash = NEW.tx_hash AND a.status = 'reorged'
      AND a.payment_id = NEW.id AND NEW.state = 'claimed';
    RETURN NEW;
END $$;

CREATE TRIGGER payments_x402_relanded
    AFTER UPDATE OF reorged_after_credit ON payments
    FOR EACH ROW WHEN (OLD.reorged_after_credit AND NOT NEW.reorged_after_credit)
    EXECUTE FUNCTION x402_mark_relanded();
