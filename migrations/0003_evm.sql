-- 0003: the same EVM spelling rules on payments, checked without regular expressions.
--
-- 0001 checks hashes and addresses with `~ '^0x[0-9a-f]{64}$'`. PostgreSQL's
-- regex engine costs about 6 us per address and 18 us per hash here, about
-- 55 us per inserted payment: most of the insert cost of a large backfill.
-- The rules below accept exactly the same strings ("0x", then only lowercase
-- hex digits, exact length) at a fraction of the cost: octet_length fixes the
-- length, and ltrim() with the hex alphabet leaves '' only when every character
-- after "0x" is one of them (any other character, multibyte included, stops
-- it). Constraint names are unchanged, so errors read as before.

ALTER TABLE payments
    DROP CONSTRAINT payments_evm_hash_normalised,
    DROP CONSTRAINT payments_evm_addresses_normalised;

ALTER TABLE payments
    ADD CONSTRAINT payments_evm_hash_normalised CHECK (
        chain = 'solana'
        OR (octet_length(tx_hash) = 66 AND starts_with(tx_hash, '0x')
            AND ltrim(substr(tx_hash, 3), '0123456789abcdef') = '')),
    ADD CONSTRAINT payments_evm_addresses_normalised CHECK (
        chain = 'solana'
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
