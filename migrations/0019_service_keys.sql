-- The charge endpoint for backends that are not HTTP-proxied (queues, gRPC, batch
-- jobs): POST /gateway/charge, authenticated by a service key (docs/gateway.md,
-- "Charge endpoint for backends").
--
--   service_keys     created by the operator (watcher service-key create); only the
--                    SHA-256 of the key is kept; scoped to route labels
--                    ("GET /v1/forecast/{city}") or, explicitly, to every route;
--                    revoked with a reason, never deleted.
--   gateway_charges  one row per idempotency key of a service key: 'running' while
--                    the charge is in flight (a twin waits, never charges), then
--                    'stored' with the answer a replay returns; forgotten after
--                    expires_at (24 h). A refusal (nothing charged) frees its key.
CREATE TABLE service_keys (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash        bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    key_prefix      text        NOT NULL,          -- first characters, to tell keys apart
    all_routes      boolean     NOT NULL,
    routes          text[],                        -- route labels; NULL only with all_routes
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    CHECK (all_routes = (routes IS NULL)),
    CHECK (routes IS NULL OR cardinality(routes) > 0),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);

CREATE TABLE gateway_charges (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_key_id   bigint      NOT NULL REFERENCES service_keys (id),
    idempotency_key  text        CHECK (length(idempotency_key) BETWEEN 1 AND 255),  -- NULL: released by a refund
    request_hash     bytea       NOT NULL CHECK (octet_length(request_hash) = 32),
    route            text        NOT NULL,
    state            text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'stored')),
    rail             text,
    charge_id        text UNIQUE,
    usage_id         bigint,                       -- token_usage / subscriber_usage row
    response         jsonb CHECK (response IS NULL OR octet_length(response::text) <= 16384),
    refunded_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    UNIQUE (service_key_id, idempotency_key),
    CHECK ((state = 'stored') = (response IS NOT NULL))
);
CREATE INDEX gateway_charges_expires_idx ON gateway_charges (expires_at);
