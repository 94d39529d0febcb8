-- 0006: the Stripe rail. Subscriptions are a second way to pay for the API.
--
-- Invariants enforced here, not only in Python:
--   * a Stripe event is applied at most once: its id is the primary key of
--     stripe_events, and the row commits in the same transaction as its effects;
--   * no card data: payment methods keep the id, brand and last 4 digits only;
--   * a subscriber key is stored as its SHA-256 only and never goes below
--     zero remaining quota (used <= the tier's quota is checked in the UPDATE);
--   * amounts are integers in the currency's minor unit (cents).

-- What each tier buys. Operators may change the numbers with SQL; the API
-- reads them at every metered call, so a change applies at once.
CREATE TABLE stripe_tiers (
    tier             text    PRIMARY KEY CHECK (tier IN ('pro', 'team', 'enterprise')),
    monthly_quota    integer NOT NULL CHECK (monthly_quota > 0),  -- calls per billing period
    rate_per_minute  integer NOT NULL CHECK (rate_per_minute > 0),
    price_usd_cents  integer NOT NULL CHECK (price_usd_cents > 0)
);
INSERT INTO stripe_tiers (tier, monthly_quota, rate_per_minute, price_usd_cents) VALUES
    ('pro',         2500,  60,  8900),
    ('team',        7500, 180, 19900),
    ('enterprise', 25000, 600, 49900);

-- Every delivery we accepted, by Stripe's event id. Written in the same
-- transaction as the event's effects: a failed apply leaves no row, so
-- Stripe's retry applies it again.
CREATE TABLE stripe_events (
    id            text        PRIMARY KEY CHECK (id ~ '^evt_'),
    type          text        NOT NULL,
    created       timestamptz NOT NULL,          -- Stripe's event.created
    livemode      boolean     NOT NULL DEFAULT false,
    object_id     text,                          -- data.object.id
    outcome       text        NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored')),
    payload       jsonb       NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_events_object_idx ON stripe_events (object_id, created);

-- Deliveries whose apply failed (written outside the failed transaction) so
-- an operator can see why Stripe is retrying.
CREATE TABLE stripe_event_failures (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text        NOT NULL,
    type        text        NOT NULL,
    error       text        NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_event_failures_event_idx ON stripe_event_failures (event_id);

CREATE TABLE stripe_customers (
    id          text        PRIMARY KEY CHECK (id ~ '^cus_'),
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- How far a status is along a subscription's life; an event of the same
-- second never moves a subscription back down (incomplete after active).
CREATE FUNCTION stripe_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE status
        WHEN 'incomplete' THEN 0
        WHEN 'trialing' THEN 1
        WHEN 'incomplete_expired' THEN 3
        WHEN 'canceled' THEN 3
        ELSE 2   -- active, past_due, unpaid, paused
    END
$$;

CREATE TABLE stripe_subscriptions (
    id                    text        PRIMARY KEY CHECK (id ~ '^sub_'),
    customer_id           text        NOT NULL,
    price_id              text,
    tier                  text        REFERENCES stripe_tiers (tier),  -- NULL: a price we do not sell
    status                text        NOT NULL CHECK (status IN (
                              'incomplete', 'incomplete_expired', 'trialing', 'active',
                              'past_due', 'unpaid', 'canceled', 'paused')),
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    cancel_at_period_end  boolean     NOT NULL DEFAULT false,
    past_due_since        timestamptz,           -- start of the grace period
    canceled_at           timestamptz,
    state_created         timestamptz NOT NULL,  -- event.created of the state stored here
    state_event_id        text        NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_subscriptions_customer_idx ON stripe_subscriptions (customer_id);

CREATE TABLE stripe_payment_methods (
    id             text        PRIMARY KEY CHECK (id ~ '^(pm|card|src)_'),
    customer_id    text,                        -- NULL once detached
    type           text        NOT NULL,
    brand          text,
    last4          text        CHECK (last4 ~ '^[0-9]{4}$'),
    state_created  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_payment_methods_customer_idx ON stripe_payment_methods (customer_id);

CREATE TABLE stripe_invoices (
    id                  text        PRIMARY KEY CHECK (id ~ '^in_'),
    customer_id         text        NOT NULL,
    subscription_id     text,
    status              text        NOT NULL,   -- draft, open, paid, uncollectible, void
    paid                boolean     NOT NULL DEFAULT false,
    attempt_count       integer     NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    currency            text        NOT NULL,
    amount_due          bigint      NOT NULL CHECK (amount_due >= 0),
    amount_paid         bigint      NOT NULL CHECK (amount_paid >= 0),
    hosted_invoice_url  text,
    invoice_pdf         text,
    period_start        timestamptz,
    period_end          timestamptz,
    created             timestamptz NOT NULL,   -- the invoice's own creation time
    state_created       timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_invoices_customer_idx ON stripe_invoices (customer_id, created DESC);

-- A checkout we started. The buyer holds the claim secret (only its hash is
-- here); it retrieves the subscriber key once the subscription is active.
CREATE TABLE stripe_checkouts (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    claim_hash       bytea       NOT NULL UNIQUE CHECK (octet_length(claim_hash) = 32),
    tier             text        NOT NULL REFERENCES stripe_tiers (tier),
    email            text        NOT NULL,
    customer_id      text,
    session_id       text        UNIQUE,
    subscription_id  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    claimed_at       timestamptz,
    expires_at       timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX stripe_checkouts_subscription_idx ON stripe_checkouts (subscription_id);

CREATE TABLE subscriber_keys (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash            bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    key_prefix          text        NOT NULL,     -- first characters, to tell keys apart
    subscription_id     text        NOT NULL REFERENCES stripe_subscriptions (id),
    customer_id         text        NOT NULL,
    checkout_id         uuid        UNIQUE REFERENCES stripe_checkouts (id),
    used                integer     NOT NULL DEFAULT 0 CHECK (used >= 0),
    usage_period_start  timestamptz,              -- the billing period `used` counts
    window_start        timestamptz NOT NULL DEFAULT date_trunc('minute', now()),
    window_count        integer     NOT NULL DEFAULT 0 CHECK (window_count >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz,
    revoked_reason      text,
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
CREATE INDEX subscriber_keys_subscription_idx ON subscriber_keys (subscription_id);

CREATE TABLE subscriber_usage (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id      bigint      NOT NULL REFERENCES subscriber_keys (id),
    endpoint    text        NOT NULL,
    cost        integer     NOT NULL CHECK (cost > 0),
    refunded    boolean     NOT NULL DEFAULT false,  -- the route answered 5xx: not counted
    status_code integer,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriber_usage_key_idx ON subscriber_usage (key_id, created_at);
