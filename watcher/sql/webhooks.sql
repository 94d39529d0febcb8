-- Webhook delivery (watcher/webhooks/worker.py). A delivery is claimed by pushing its
-- next_attempt_at past the attempt's timeout (the lease) in the claiming statement
-- itself; the HTTP request is made after that commits, and its outcome is written
-- only while the lease is still ours (attempts unchanged, still pending).

-- name: webhook_cancel_unsendable
-- Due deliveries whose endpoint was disabled or deleted are not sent ($1 reason).
UPDATE webhook_deliveries d
SET status = 'cancelled', last_error = $1
FROM webhook_endpoints w
WHERE w.id = d.endpoint_id
  AND d.status = 'pending'
  AND d.next_attempt_at <= now()
  AND (NOT w.enabled OR w.deleted_at IS NOT NULL);

-- name: webhook_claim
-- Up to $1 due deliveries, each leased for $2 seconds, with what the attempt needs. The
-- previous secret is handed out only while its grace period runs. At most $4 of one
-- endpoint, none of the endpoints in $3 (those holding their share of the worker's
-- slots already): a receiver that answers only at the timeout cannot hold every slot.
-- The per-endpoint count looks at the first $1 * 4 due rows of the other endpoints.
WITH ahead AS (
    SELECT d.id, row_number() OVER (PARTITION BY d.endpoint_id
                                    ORDER BY d.next_attempt_at, d.id) AS nth
    FROM (SELECT d.id, d.endpoint_id, d.next_attempt_at
          FROM webhook_deliveries d
          WHERE d.status = 'pending'
            AND d.next_attempt_at <= now()
            AND NOT d.endpoint_id = ANY ($3::text[])
          ORDER BY d.next_attempt_at, d.id
          LIMIT $1 * 4) d
), due AS (
    SELECT d.id
    FROM ahead a
    JOIN webhook_deliveries d ON d.id = a.id
    JOIN webhook_endpoints w ON w.id = d.endpoint_id
    WHERE a.nth <= $4
      AND d.status = 'pending'
      AND d.next_attempt_at <= now()
      AND w.enabled AND w.deleted_at IS NULL
    ORDER BY d.next_attempt_at, d.id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1,
        next_attempt_at = now() + make_interval(secs => $2::float8)
    FROM due
    WHERE d.id = due.id
    RETURNING d.id, d.attempts, d.event_id, d.endpoint_id
)
SELECT c.id AS delivery_id, c.attempts AS attempt, c.endpoint_id,
       e.id, e.type, e.created_at, e.data,
       w.url, w.secret,
       CASE WHEN w.previous_secret_until > now() THEN w.previous_secret END AS previous_secret
FROM claimed c
JOIN events e ON e.id = c.event_id
JOIN webhook_endpoints w ON w.id = c.endpoint_id
ORDER BY c.id;

-- name: webhook_next_due
-- Seconds until the soonest pending delivery is due (NULL: none pending).
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM webhook_deliveries
WHERE status = 'pending';

-- name: webhook_record_success
-- One successful attempt in one statement: the attempt row, the delivery succeeded (while
-- the lease is ours: attempts unchanged, still pending), the endpoint's failing streak
-- ended ($1 delivery, $2 attempt, $3 worker, $4 started, $5 ms, $6 status, $7 snippet,
-- $8 endpoint).
WITH attempt AS (
    INSERT INTO webhook_attempts
        (delivery_id, attempt, worker, started_at, duration_ms, status_code, response_snippet)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
), delivery AS (
    UPDATE webhook_deliveries
    SET status = 'succeeded', delivered_at = now(), last_attempt_at = $4,
        last_status = $6, last_error = NULL
    WHERE id = $1 AND attempts = $2 AND status = 'pending'
)
UPDATE webhook_endpoints
SET failing_since = NULL, updated_at = now()
WHERE id = $8 AND failing_since IS NOT NULL;

-- name: webhook_record_failure
-- One failed attempt in one statement: the attempt row; the delivery waits $9 seconds
-- for its next attempt, or is failed when $9 is NULL (that was the last); the endpoint's
-- failing streak starts if none runs. Returns when the streak began ($7 error, $8
-- snippet, $10 endpoint; the rest as in webhook_record_success).
WITH attempt AS (
    INSERT INTO webhook_attempts
        (delivery_id, attempt, worker, started_at, duration_ms, status_code, error,
         response_snippet)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
), delivery AS (
    UPDATE webhook_deliveries
    SET status = CASE WHEN $9::float8 IS NULL THEN 'failed' ELSE 'pending' END,
        next_attempt_at = CASE WHEN $9::float8 IS NULL THEN next_attempt_at
                               ELSE now() + make_interval(secs => $9::float8) END,
        last_attempt_at = $4, last_status = $6, last_error = $7
    WHERE id = $1 AND attempts = $2 AND status = 'pending'
), streak AS (
    UPDATE webhook_endpoints
    SET failing_since = now(), updated_at = now()
    WHERE id = $10 AND failing_since IS NULL
    RETURNING failing_since
)
SELECT coalesce((SELECT failing_since FROM streak),
                (SELECT failing_since FROM webhook_endpoints WHERE id = $10));

-- name: webhook_endpoint_disable
-- Disable an endpoint failing for longer than $2 seconds ($3 reason); the row if it was.
UPDATE webhook_endpoints
SET enabled = false, disabled_at = now(), disabled_reason = $3, updated_at = now()
WHERE id = $1 AND enabled AND deleted_at IS NULL
  AND failing_since <= now() - make_interval(secs => $2::float8)
RETURNING id, url, description, event_types, failing_since, disabled_at, disabled_reason;

-- name: webhook_cancel_endpoint
-- The pending deliveries of an endpoint that will not be sent ($2 reason).
UPDATE webhook_deliveries
SET status = 'cancelled', last_error = $2
WHERE endpoint_id = $1 AND status = 'pending';

-- name: webhook_gauges
-- The backlog and the failing endpoints, for the gauges.
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_endpoints
        WHERE failing_since IS NOT NULL AND enabled AND deleted_at IS NULL) AS failing;
