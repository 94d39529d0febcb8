-- 0011: an EVM invoice's amount is held long after the invoice expires.
--
-- On EVM the amount is what finds the invoice. Until now an amount was free again
-- as soon as its invoice stopped being open (the grace window after expiry), so a
-- payer paying an expired invoice late paid a stranger's new invoice with the same
-- amount: the stranger claimed a token for nothing and the real payer's claim was
-- refused. Now each amount is held from the invoice's creation until it expired
-- plus a hold (ledger.INVOICE_AMOUNT_HOLD, 24 hours), and the least recently used
-- free amount is handed out first, so an amount comes back as late as possible.
--
-- One row per (chain, amount): the row lock settles two concurrent invoices that
-- picked the same amount (the loser picks again). Invoices with a reference (Solana
-- Pay) are found by their reference and hold no amount.

CREATE TABLE invoice_amounts (
    chain           text         NOT NULL,
    amount          token_amount NOT NULL,
    invoice_id      uuid         NOT NULL,   -- the invoice holding it now (or last)
    reserved_until  timestamptz  NOT NULL,
    PRIMARY KEY (chain, amount)
);

-- Invoices already out hold their amounts the same way (24 hours past expiry).
INSERT INTO invoice_amounts (chain, amount, invoice_id, reserved_until)
SELECT DISTINCT ON (chain, amount) chain, amount, id, expires_at + interval '24 hours'
FROM invoices
WHERE reference IS NULL
ORDER BY chain, amount, expires_at DESC;

-- link_invoices asks "which other invoice has this amount?" for every credit.
CREATE INDEX invoices_chain_amount_idx ON invoices (chain, amount) WHERE reference IS NULL;
