-- The networks of the registry (watcher/networks.py) as a reference table.
--
-- Until now five tables checked `chain IN ('base', 'ethereum', 'solana')`, the
-- reporting views listed the same three names, and the shape checks picked the
-- family by name (`chain = 'solana' OR tx_hash ~ ...`). Now:
--   * `networks` holds one row per registry network (name, family). This migration
--     seeds the three networks that existed before it; the watcher adds the others
--     from the registry at every start (db.migrate, under the migration lock) and
--     refuses to start if a row's family ever disagrees with the registry.
--   * every `chain` column references `networks (name)`;
--   * payments, invoices and x402_authorizations carry the network's `family`,
--     filled from `networks` on insert and kept equal to it by a foreign key on
--     (chain, family), so the shape checks read the family, never a name;
--   * the views and the analytics roll-up list the networks from the table.
-- Existing rows keep every value; the new column is filled from their network.

CREATE TABLE networks (
    name    text  PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,31}$'),
    family  text  NOT NULL CHECK (family IN ('evm', 'solana')),
    CONSTRAINT networks_name_family_uq UNIQUE (name, family)
);
INSERT INTO networks (name, family) VALUES ('base', 'evm'), ('ethereum', 'evm'), ('solana', 'solana');

-- The fixed lists of names go; a foreign key takes their place.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT con.conrelid::regclass AS tbl, con.conname
        FROM pg_constraint con
        WHERE con.contype = 'c'
          AND con.conrelid::regclass::text IN ('cursors', 'chain_blocks', 'invoices', 'payments',
                                               'x402_analytics', 'x402_authorizations')
          AND pg_get_constraintdef(con.oid) ~ '''(base|ethereum|solana)'''
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tbl, c.conname);
    END LOOP;
END $$;

-- Filled from the network on insert; the composite foreign key keeps it true after.
CREATE FUNCTION fill_network_family() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT n.family INTO NEW.family FROM networks n WHERE n.name = NEW.chain;
    RETURN NEW;
END $$;

ALTER TABLE payments ADD COLUMN family text;
ALTER TABLE invoices ADD COLUMN family text;
ALTER TABLE x402_authorizations ADD COLUMN family text;
UPDATE payments p SET family = n.family FROM networks n WHERE n.name = p.chain;
UPDATE invoices i SET family = n.family FROM networks n WHERE n.name = i.chain;
UPDATE x402_authorizations a SET family = n.family FROM networks n WHERE n.name = a.chain;

ALTER TABLE payments
    ALTER COLUMN family SET NOT NULL,
    ADD CONSTRAINT payments_network_fk FOREIGN KEY (chain, family)
        REFERENCES networks (name, family),
    ADD CONSTRAINT payments_evm_hash_normalised CHECK (
        family <> 'evm'
        OR (octet_length(tx_hash) = 66 AND starts_with(tx_hash, '0x')
            AND ltrim(substr(tx_hash, 3), '0123456789abcdef') = '')),
    ADD CONSTRAINT payments_solana_signature
        CHECK (family <> 'solana' OR tx_hash ~ '^[1-9A-HJ-NP-Za-km-z]{32,88}$'),
    ADD CONSTRAINT payments_evm_addresses_normalised CHECK (
        family <> 'evm'
        OR (octet_length(token) = 42 AND starts_with(token, '0x')
            AND ltrim(substr(token, 3), '0123456789abcdef') = ''
            AND octet_length(to_address) = 42 AND starts_with(to_address, '0x')
            AND ltrim(substr(to_address, 3), '0123456789abcdef') = ''
            AND (from_address IS NULL
                 OR (octet_length(from_address) = 42 AND starts_with(from_address, '0x')
                     AND ltrim(substr(from_address, 3), '0123456789abcdef') = ''))
            AND (block_hash IS NULL
                 OR (octet_length(block_hash) = 66 AND starts_with(block_hash, '0x')
                     AND ltrim(substr(block_hash, 3), '0123456789abcdef') = ''))));

ALTER TABLE invoices
    ALTER COLUMN family SET NOT NULL,
    ADD CONSTRAINT invoices_network_fk FOREIGN KEY (chain, family)
        REFERENCES networks (name, family),
    ADD CONSTRAINT invoices_evm_pay_to CHECK (family <> 'evm' OR pay_to ~ '^0x[0-9a-f]{40}$');

ALTER TABLE x402_authorizations
    ALTER COLUMN family SET NOT NULL,
    ADD CONSTRAINT x402_authorizations_network_fk FOREIGN KEY (chain, family)
        REFERENCES networks (name, family),
    ADD CONSTRAINT x402_authorizations_evm CHECK (family = 'evm');

CREATE TRIGGER payments_fill_family BEFORE INSERT ON payments
    FOR EACH ROW EXECUTE FUNCTION fill_network_family();
CREATE TRIGGER invoices_fill_family BEFORE INSERT ON invoices
    FOR EACH ROW EXECUTE FUNCTION fill_network_family();
CREATE TRIGGER x402_authorizations_fill_family BEFORE INSERT ON x402_authorizations
    FOR EACH ROW EXECUTE FUNCTION fill_network_family();

ALTER TABLE cursors
    ADD CONSTRAINT cursors_network_fk FOREIGN KEY (chain) REFERENCES networks (name);
ALTER TABLE chain_blocks
    ADD CONSTRAINT chain_blocks_network_fk FOREIGN KEY (chain) REFERENCES networks (name);
ALTER TABLE x402_analytics
    ADD CONSTRAINT x402_analytics_network_fk FOREIGN KEY (chain) REFERENCES networks (name);
ALTER TABLE invoice_amounts
    ADD CONSTRAINT invoice_amounts_network_fk FOREIGN KEY (chain) REFERENCES networks (name);

-- On EVM the amount identifies the invoice: unique among the open ones of a network.
DROP INDEX invoices_open_amount_uq;
CREATE UNIQUE INDEX invoices_open_amount_uq ON invoices (chain, amount)
    WHERE status = 'open' AND family = 'evm';

-- A token account's owner history belongs to one cluster: the same address can exist on
-- mainnet and devnet with other owners.
ALTER TABLE solana_account_owners ADD COLUMN chain text NOT NULL DEFAULT 'solana'
    REFERENCES networks (name);
ALTER TABLE solana_account_owners ALTER COLUMN chain DROP DEFAULT;
ALTER TABLE solana_account_owners DROP CONSTRAINT solana_account_owners_pkey,
    ADD PRIMARY KEY (chain, token_account);

-- The reporting views and the roll-up list the networks from the table.
CREATE OR REPLACE VIEW v_x402_stats_24h AS
SELECT c.name AS chain,
       count(p.id) FILTER (WHERE p.state IN ('credited', 'claimed'))              AS payments_credited,
       count(p.id) FILTER (WHERE p.state = 'observed')                           AS payments_pending,
       count(p.id) FILTER (WHERE p.state = 'orphaned')                           AS payments_orphaned,
       count(p.id) FILTER (WHERE p.state = 'below_minimum')                      AS payments_below_minimum,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) AS amount_credited,
       coalesce(sum(p.amount) FILTER (WHERE p.state IN ('credited', 'claimed')), 0) / 1000000.0
                                                                                  AS amount_credited_usd,
       count(DISTINCT p.from_address) FILTER (WHERE p.state IN ('credited', 'claimed')) AS unique_payers
FROM networks c
LEFT JOIN payments p ON p.chain = c.name AND p.observed_at > now() - interval '24 hours'
GROUP BY c.name;

CREATE OR REPLACE FUNCTION update_x402_analytics(since date DEFAULT current_date - 1)
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
    CROSS JOIN (SELECT name AS chain FROM networks) AS c
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
