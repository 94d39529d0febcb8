-- The x402 relayer's account nonces, handed out by the database so that several API
-- processes can share one relayer key (api/x402/nonces.py explains the design).
--
-- relayer_nonces: one row per (network, relayer address). Its row lock is the mutex
-- taken for a few milliseconds while a nonce is chosen, the transaction signed and
-- stored; `next_nonce` is the lowest nonce never handed out.
--
-- relayer_transactions: every transaction we signed, one per nonce, stored (raw) in
-- the same database transaction that hands out the nonce and *before* it is broadcast.
-- Any process can therefore re-broadcast it (the same bytes, the same hash) when the
-- node lost it, so a crash between sending and recording, a send that timed out or a
-- node that dropped it never leaves a gap that would wedge every later nonce.
-- status: signed (stored, maybe broadcast) -> refused (the node refused it for good:
--         its nonce is handed out again) | replaced (its nonce was handed out again).

CREATE TABLE relayer_nonces (
    chain       text         NOT NULL REFERENCES networks (name),
    address     evm_address  NOT NULL,
    next_nonce  bigint       NOT NULL CHECK (next_nonce >= 0),
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, address)
);

CREATE TABLE relayer_transactions (
    chain             text         NOT NULL,
    address           evm_address  NOT NULL,
    nonce             bigint       NOT NULL CHECK (nonce >= 0),
    tx_hash           text         NOT NULL CHECK (tx_hash ~ '^0x[0-9a-f]{64}$'),
    raw_tx            text         NOT NULL CHECK (raw_tx ~ '^0x[0-9a-f]+$'),
    authorization_id  bigint       REFERENCES x402_authorizations (id),
    status            text         NOT NULL DEFAULT 'signed'
                      CHECK (status IN ('signed', 'refused', 'replaced')),
    created_at        timestamptz  NOT NULL DEFAULT now(),
    updated_at        timestamptz  NOT NULL DEFAULT now(),
    -- One live transaction per nonce; a refused or replaced one stays for the record.
    FOREIGN KEY (chain, address) REFERENCES relayer_nonces (chain, address)
);
CREATE UNIQUE INDEX relayer_transactions_live_uq ON relayer_transactions (chain, address, nonce)
    WHERE status = 'signed';
CREATE UNIQUE INDEX relayer_transactions_hash_uq ON relayer_transactions (tx_hash);
CREATE INDEX relayer_transactions_nonce_idx ON relayer_transactions (chain, address, nonce);
