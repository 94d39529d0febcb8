-- Events for the merchant's systems (docs/webhooks.md).
--
--   events              the outbox: one row per state change a merchant cares about,
--                       written by the statement that makes the change (watcher/events.py,
--                       called from ledger.py and the API's transitions), so it commits
--                       with the change or not at all. `data` is the resource as it is
--                       after the change. `txid` is the writing transaction's id: the feed
--                       shows an event only once every transaction older than it has
--                       finished, in (txid, id) order, so a consumer paging with
--                       after=<id> never skips one that commits late.
--   webhook_endpoints   where events are sent, which types, the signing secret (and
--                       the previous one during a rotation's grace period).
--   webhook_deliveries  one row per (event, endpoint), created with the event; the
--                       worker claims due rows with FOR UPDATE SKIP LOCKED and pushes
--                       next_attempt_at past the attempt's timeout (its lease).
--   webhook_attempts    every attempt: who made it, when, how long, what came back.
--   event_read_keys     read-only keys for the event feed (stored hashed).

CREATE TABLE events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    type         text        NOT NULL CHECK (type ~ '^[a-z0-9_]+(\.[a-z0-9_]+)+$'),
    resource     text        NOT NULL CHECK (resource ~ '^[a-z0-9_]+$'),
    resource_id  text        NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 200),
    data         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_feed_idx ON events (txid, id);
CREATE INDEX events_resource_idx ON events (resource, resource_id, id);
CREATE INDEX events_created_idx ON events (created_at);

CREATE TABLE webhook_endpoints (
    id                      text        PRIMARY KEY
                            DEFAULT 'we_' || replace(gen_random_uuid()::text, '-', ''),
    url                     text        NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    description             text        CHECK (length(description) <= 500),
    event_types             text[]      NOT NULL CHECK (cardinality(event_types) > 0),
    enabled                 boolean     NOT NULL DEFAULT true,
    secret                  text        NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/=]{20,}$'),
    previous_secret         text        CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/=]{20,}$'),
    previous_secret_until   timestamptz,
    failing_since           timestamptz,            -- first failure of the current streak
    disabled_at             timestamptz,
    disabled_reason         text,
    deleted_at              timestamptz,            -- kept for the deliveries' history
    created_by              text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL))
);

CREATE TABLE webhook_deliveries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         bigint      NOT NULL REFERENCES events (id),
    endpoint_id      text        NOT NULL REFERENCES webhook_endpoints (id),
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_deliveries_once UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       bigint      NOT NULL REFERENCES webhook_deliveries (id),
    attempt           integer     NOT NULL CHECK (attempt > 0),
    worker            text        NOT NULL,
    started_at        timestamptz NOT NULL,
    duration_ms       integer     CHECK (duration_ms >= 0),
    status_code       integer,
    error             text,
    response_snippet  text        CHECK (length(response_snippet) <= 1024),
    CONSTRAINT webhook_attempts_once UNIQUE (delivery_id, attempt)
);

CREATE TABLE event_read_keys (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash      bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    key_prefix    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- The one writer of events (watcher/events.py calls it from each resource's query):
-- inserts the events in the order given, a delivery for every enabled endpoint that
-- wants the type, and wakes the listeners at commit (NOTIFY is transactional). The
-- payloads stay tiny: the newest event id; an invoice's id for the invoice streams.
CREATE FUNCTION emit_events(etype text, eresource text, ids text[], datas jsonb[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    newest bigint;
BEGIN
    IF coalesce(cardinality(ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    WITH ev AS (
        INSERT INTO events (type, resource, resource_id, data)
        SELECT etype, eresource, u.rid, u.d
        FROM unnest(ids, datas) WITH ORDINALITY AS u (rid, d, ord)
        ORDER BY u.ord
        RETURNING id, type
    ), fan AS (
        INSERT INTO webhook_deliveries (event_id, endpoint_id)
        SELECT ev.id, w.id
        FROM ev JOIN webhook_endpoints w
          ON w.enabled AND w.deleted_at IS NULL
         AND (ev.type = ANY (w.event_types) OR '*' = ANY (w.event_types))
        ON CONFLICT DO NOTHING
    )
    SELECT count(*), max(id) INTO n, newest FROM ev;
    PERFORM pg_notify('watcher_events', newest::text);
    IF eresource = 'invoice' THEN
        PERFORM pg_notify('watcher_invoices', r) FROM (SELECT DISTINCT r FROM unnest(ids) r) s;
    END IF;
    RETURN n;
END;
$$;
