-- 0001: the payment ledger.
--
-- Invariants enforced here, not only in Python:
--   * a credit is keyed by where it happened: (chain, tx_hash, log_index);
--     log_index is the EVM log index, or the Solana account index;
--   * EVM hashes and addresses are stored lowercase, so a re-spelled hash
--     (upper-case hex) is refused instead of making a second row;
--   * amounts are positive integers in base units (never rounded: a fractional
--     value is refused, not truncated);
--   * an access token never has negative remaining requests and is stored as
--     its SHA-256 only.

CREATE DOMAIN token_amount AS numeric
    CHECK (VALUE > 0 AND VALUE = trunc(VALUE) AND VALUE < 1e78);

CREATE DOMAIN evm_address AS text
    CHECK (VALUE ~ '^0x[0-9a-f]{40}$');

-- ---------------------------------------------------------------------------
-- Chain following state
-- ---------------------------------------------------------------------------

-- Where each follower stream has got to. EVM: one stream per chain ('logs'),
-- num = last block fully processed, hash = its hash. Solana: one stream per
-- watched token account, num = slot, hash = newest processed signature.
CREATE TABLE cursors (
    chain       text        NOT NULL CHECK (chain IN ('base', 'ethereum', 'solana')),
    stream      text        NOT NULL DEFAULT 'logs',
    num         bigint      NOT NULL CHECK (num >= 0),
    hash        text,
    head        bigint      CHECK (head >= 0),     -- best head seen, for "k of n confirmations"
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, stream)
);

-- The recent canonical window (number, hash, parent) used to detect reorgs.
CREATE TABLE chain_blocks (
    chain        text        NOT NULL CHECK (chain IN ('base', 'ethereum', 'solana')),
    num          bigint      NOT NULL CHECK (num >= 0),
    hash         text        NOT NULL,
    parent_hash  text        NOT NULL,
    block_time   timestamptz,
    PRIMARY KEY (chain, num)
);

-- ---------------------------------------------------------------------------
-- Invoices: the safe way to pay (unique amount on EVM, reference key on Solana)
-- ---------------------------------------------------------------------------

CREATE TABLE invoices (
    id                 uuid         PRIMARY KEY DEFAULT gen_random_uuid(),
    chain              text         NOT NULL CHECK (chain IN ('base', 'ethereum', 'solana')),
    pay_to             text         NOT NULL,
    token              text         NOT NULL,           -- USDC contract or mint
    amount             token_amount NOT NULL,           -- exact amount asked, base units
    requests           integer      NOT NULL CHECK (requests > 0),
    reference          text         UNIQUE,             -- Solana Pay reference key (base58)
    claim_secret_hash  bytea        NOT NULL CHECK (octet_length(claim_secret_hash) = 32),
    status             text         NOT NULL DEFAULT 'open'
                       CHECK (status IN ('open', 'paid', 'credited', 'expired', 'claimed')),
    created_at         timestamptz  NOT NULL DEFAULT now(),
    expires_at         timestamptz  NOT NULL,
    CHECK (expires_at > created_at),
    CHECK (chain = 'solana' OR pay_to ~ '^0x[0-9a-f]{40}$')
);
-- On EVM the amount identifies the invoice: unique among the open ones of a chain.
CREATE UNIQUE INDEX invoices_open_amount_uq ON invoices (chain, amount)
    WHERE status = 'open' AND chain <> 'solana';
CREATE INDEX invoices_status_expiry_idx ON invoices (status, expires_at);

-- ---------------------------------------------------------------------------
-- Payments: every USDC transfer toward us that the followers saw
-- ---------------------------------------------------------------------------

CREATE TABLE payments (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chain                 text         NOT NULL CHECK (chain IN ('base', 'ethereum', 'solana')),
    tx_hash               text         NOT NULL,   -- EVM tx hash, or Solana signature
    log_index             integer      NOT NULL CHECK (log_index >= 0),
    block_number          bigint       NOT NULL CHECK (block_number >= 0),  -- slot on Solana
    block_hash            text,
    block_time            timestamptz,
    token                 text         NOT NULL,   -- USDC contract or mint that emitted it
    from_address          text,                    -- payer (owner whose balance went down)
    to_address            text         NOT NULL,   -- our receiving address / owner
    token_account         text,                    -- Solana: the receiving token account
    amount                token_amount NOT NULL,
    state                 text         NOT NULL DEFAULT 'observed'
                          CHECK (state IN ('observed', 'credited', 'claimed', 'orphaned',
                                           'below_minimum', 'not_ours')),
    reason                text,                    -- why it is not (or no longer) credited
    memo                  text,                    -- Solana SPL memo
    reference_keys        text[]       NOT NULL DEFAULT '{}',  -- Solana Pay references
    invoice_id            uuid         REFERENCES invoices (id),
    reorged_after_credit  boolean      NOT NULL DEFAULT false, -- deeper reorg than confirmations
    observed_at           timestamptz  NOT NULL DEFAULT now(),
    credited_at           timestamptz,
    orphaned_at           timestamptz,
    updated_at            timestamptz  NOT NULL DEFAULT now(),
    CONSTRAINT payments_location_uq UNIQUE (chain, tx_hash, log_index),
    CONSTRAINT payments_evm_hash_normalised
        CHECK (chain = 'solana' OR tx_hash ~ '^0x[0-9a-f]{64}$'),
    CONSTRAINT payments_solana_signature
        CHECK (chain <> 'solana' OR tx_hash ~ '^[1-9A-HJ-NP-Za-km-z]{32,88}$'),
    CONSTRAINT payments_evm_addresses_normalised
        CHECK (chain = 'solana' OR (token ~ '^0x[0-9a-f]{40}$'
                                    AND to_address ~ '^0x[0-9a-f]{40}$'
                                    AND (from_address IS NULL OR from_address ~ '^0x[0-9a-f]{40}$')
                                    AND (block_hash IS NULL OR block_hash ~ '^0x[0-9a-f]{64}$'))),
    CONSTRAINT payments_credited_has_time
        CHECK (state NOT IN ('credited', 'claimed') OR credited_at IS NOT NULL)
);
CREATE INDEX payments_state_idx ON payments (chain, state, block_number);
CREATE INDEX payments_from_idx ON payments (from_address);
CREATE INDEX payments_credited_at_idx ON payments (credited_at) WHERE credited_at IS NOT NULL;
CREATE UNIQUE INDEX payments_invoice_uq ON payments (invoice_id) WHERE invoice_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Access tokens and metering
-- ---------------------------------------------------------------------------

CREATE TABLE access_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash      bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    payment_id      bigint      UNIQUE REFERENCES payments (id),  -- one token per payment
    invoice_id      uuid        UNIQUE REFERENCES invoices (id),
    payer           text,
    requests_total  integer     NOT NULL CHECK (requests_total > 0),
    remaining       integer     NOT NULL CHECK (remaining >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    CHECK (remaining <= requests_total),
    CHECK (expires_at > created_at)
);
CREATE INDEX access_tokens_expires_idx ON access_tokens (expires_at);

CREATE TABLE token_usage (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_id         bigint      NOT NULL REFERENCES access_tokens (id),
    endpoint         text        NOT NULL,
    cost             integer     NOT NULL CHECK (cost >= 0),
    idempotency_key  text,
    status_code      integer,
    refunded         boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX token_usage_idempotency_uq ON token_usage (token_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX token_usage_endpoint_idx ON token_usage (endpoint, created_at);
