-- Managing webhook endpoints, redelivery, replay, the event feed and its read keys
-- (watcher/webhook_admin.py, watcher/event_feed.py; docs/webhooks.md). The columns an
-- endpoint is shown with never include its secrets.

-- name: webhook_admin_create
INSERT INTO webhook_endpoints (url, description, event_types, secret, created_by)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, url, description, event_types, enabled, failing_since, disabled_at,
          disabled_reason, previous_secret_until, created_at, updated_at;

-- name: webhook_admin_list
SELECT id, url, description, event_types, enabled, failing_since, disabled_at,
       disabled_reason, previous_secret_until, created_at, updated_at
FROM webhook_endpoints WHERE deleted_at IS NULL ORDER BY created_at, id;

-- name: webhook_admin_get
SELECT id, url, description, event_types, enabled, failing_since, disabled_at,
       disabled_reason, previous_secret_until, created_at, updated_at
FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL;

-- name: webhook_admin_update
-- $2 url, $4 event types, $5 enabled: NULL keeps the value; $3 true sets the
-- description to $6 (NULL clears it). Enabling again forgets an automatic disable and
-- the failure streak that caused it; a new URL starts without a streak too. Disabling
-- says who did it.
UPDATE webhook_endpoints SET
    url = coalesce($2, url),
    description = CASE WHEN $3 THEN $6 ELSE description END,
    event_types = coalesce($4, event_types),
    enabled = coalesce($5, enabled),
    disabled_at = CASE WHEN $5 THEN NULL
                       WHEN NOT $5 AND enabled THEN now() ELSE disabled_at END,
    disabled_reason = CASE WHEN $5 THEN NULL
                           WHEN NOT $5 AND enabled THEN 'disabled by the operator'
                           ELSE disabled_reason END,
    failing_since = CASE WHEN $5 OR $2 IS NOT NULL THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id, url, description, event_types, enabled, failing_since, disabled_at,
          disabled_reason, previous_secret_until, created_at, updated_at;

-- name: webhook_admin_delete
-- Soft: the row stays for its deliveries' history; what was still to be sent is not.
WITH gone AS (
    UPDATE webhook_endpoints SET deleted_at = now(), updated_at = now()
    WHERE id = $1 AND deleted_at IS NULL
    RETURNING id
), cancelled AS (
    UPDATE webhook_deliveries d SET status = 'cancelled', last_error = 'endpoint deleted'
    FROM gone WHERE d.endpoint_id = gone.id AND d.status = 'pending'
    RETURNING d.id
)
SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT count(*) FROM cancelled) AS cancelled;

-- name: webhook_admin_rotate
-- $2 the new secret, $3 the grace period: the old secret keeps signing until then (a
-- zero grace drops it at once). Only one previous secret is kept.
UPDATE webhook_endpoints SET
    previous_secret = CASE WHEN $3::interval > interval '0' THEN secret END,
    previous_secret_until = CASE WHEN $3::interval > interval '0' THEN now() + $3::interval END,
    secret = $2,
    updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING id, previous_secret_until;

-- name: webhook_admin_audit
INSERT INTO admin_audit (action, subject, reason, detail, client, operator)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
RETURNING id, at;

-- name: webhook_admin_event
SELECT id, type, created_at, data::text AS data FROM events WHERE id = $1;

-- name: webhook_admin_event_deliveries
SELECT d.id, d.endpoint_id, w.url, d.status, d.attempts, d.next_attempt_at,
       d.last_attempt_at, d.last_status, d.last_error, d.delivered_at, d.created_at
FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id
WHERE d.event_id = $1 ORDER BY d.id;

-- name: webhook_admin_delivery_attempts
SELECT delivery_id, attempt, worker, started_at, duration_ms, status_code, error,
       response_snippet
FROM webhook_attempts WHERE delivery_id = ANY ($1::bigint[]) ORDER BY delivery_id, attempt;

-- name: webhook_admin_redeliver
-- Due now, whatever became of it before; the attempt count goes on (attempt numbers
-- are unique per delivery).
INSERT INTO webhook_deliveries (event_id, endpoint_id) VALUES ($1, $2)
ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO UPDATE
SET status = 'pending', next_attempt_at = now(), delivered_at = NULL
RETURNING id, status, attempts, (xmax = 0) AS created;

-- name: webhook_admin_replay_count
-- How many events a replay would queue ($1 since, $2 until or NULL, $3 types, '*' all),
-- counted up to $4 (the cap + 1).
SELECT count(*) FROM (
    SELECT 1 FROM events e
    WHERE e.created_at >= $1 AND ($2::timestamptz IS NULL OR e.created_at < $2)
      AND (e.type = ANY ($3::text[]) OR '*' = ANY ($3::text[]))
    LIMIT $4
) n;

-- name: webhook_admin_replay
-- One delivery per matching event to endpoint $5: new ones pending, finished ones
-- (succeeded, failed, cancelled) pending again; pending ones are already on their way.
WITH ev AS (
    SELECT e.id FROM events e
    WHERE e.created_at >= $1 AND ($2::timestamptz IS NULL OR e.created_at < $2)
      AND (e.type = ANY ($3::text[]) OR '*' = ANY ($3::text[]))
    ORDER BY e.id
    LIMIT $4
), up AS (
    INSERT INTO webhook_deliveries (event_id, endpoint_id)
    SELECT ev.id, $5 FROM ev ORDER BY ev.id
    ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO UPDATE
    SET status = 'pending', next_attempt_at = now(), delivered_at = NULL
    WHERE webhook_deliveries.status <> 'pending'
    RETURNING (xmax = 0) AS created
)
SELECT (SELECT count(*) FROM ev) AS matched,
       count(*) FILTER (WHERE created) AS created,
       count(*) FILTER (WHERE NOT created) AS reset
FROM up;

-- name: event_feed_cursor
SELECT txid::text FROM events WHERE id = $1;

-- name: event_feed_page
-- The feed (watcher/event_feed.py): events after the cursor ($1 txid, $2 id) in
-- (txid, id) order, only those written by transactions older than every one still in
-- flight (so nothing can commit later before them); $3 types or NULL, $4 the limit.
-- `newest` is the last event below that horizon after the cursor, matching or not:
-- the cursor a consumer can move to once it has every matching one. One statement,
-- one snapshot: the page and `newest` see the same horizon.
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon
), page AS (
    SELECT e.txid, e.id, e.type, e.created_at, e.data::text AS data
    FROM events e, h
    WHERE e.txid < h.horizon AND (e.txid, e.id) > ($1::text::xid8, $2::bigint)
      AND ($3::text[] IS NULL OR e.type = ANY ($3::text[]))
    ORDER BY e.txid, e.id
    LIMIT $4
), newest AS (
    SELECT e.id FROM events e, h
    WHERE e.txid < h.horizon AND (e.txid, e.id) > ($1::text::xid8, $2::bigint)
    ORDER BY e.txid DESC, e.id DESC
    LIMIT 1
)
SELECT n.id AS newest, p.id, p.type, p.created_at, p.data
FROM newest n LEFT JOIN page p ON true
ORDER BY p.txid, p.id;

-- name: event_key_insert
INSERT INTO event_read_keys (name, key_hash, key_prefix) VALUES ($1, $2, $3)
RETURNING id, created_at;

-- name: event_key_list
SELECT id, name, key_prefix, created_at, last_used_at, revoked_at
FROM event_read_keys ORDER BY id;

-- name: event_key_revoke
UPDATE event_read_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
RETURNING id;

-- name: event_key_use
-- A live key behind a bearer secret, its last use stamped at most once a minute.
WITH k AS (
    SELECT id FROM event_read_keys WHERE key_hash = $1 AND revoked_at IS NULL
), stamp AS (
    UPDATE event_read_keys r SET last_used_at = now()
    FROM k WHERE r.id = k.id
      AND (r.last_used_at IS NULL OR r.last_used_at < now() - interval '1 minute')
)
SELECT id FROM k;
