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

-- name: webhook_record_batch
-- The outcomes of a batch of attempts in one statement: each attempt's row (an attempt
-- already recorded is not recorded again: UNIQUE (delivery, attempt)); each delivery
-- still leased to that attempt (attempts unchanged, still pending) succeeded, or waits
-- its delay for the next attempt, or failed when the delay is NULL (that was the last);
-- each endpoint's failing streak ends with a success and starts with a failure (a
-- failure after a success in the same batch starts a new one). Arrays, one element per
-- outcome in the order they came: $1 delivery, $2 attempt, $3 started, $4 ms, $5 status,
-- $6 error, $7 snippet, $8 delay (seconds; NULL: the last), $9 endpoint, $10 ok;
-- $11 worker. Returns the outcomes already recorded (kind 'duplicate', delivery_id) and
-- the endpoints whose streak runs (kind 'failing', endpoint_id, failing_since).
WITH o AS (
    SELECT *
    FROM unnest($1::bigint[], $2::integer[], $3::timestamptz[], $4::integer[],
                $5::integer[], $6::text[], $7::text[], $8::float8[], $9::text[],
                $10::boolean[])
         WITH ORDINALITY
         AS o(delivery_id, attempt, started_at, duration_ms, status_code, error, snippet,
              delay, endpoint_id, ok, n)
), attempt AS (
    INSERT INTO webhook_attempts
        (delivery_id, attempt, worker, started_at, duration_ms, status_code, error,
         response_snippet)
    SELECT delivery_id, attempt, $11, started_at, duration_ms, status_code, error, snippet
    FROM o
    ORDER BY n
    ON CONFLICT (delivery_id, attempt) DO NOTHING
    RETURNING delivery_id, attempt
), recorded AS (
    SELECT o.* FROM o JOIN attempt a USING (delivery_id, attempt)
), delivery AS (
    UPDATE webhook_deliveries d
    SET status = CASE WHEN r.ok THEN 'succeeded'
                      WHEN r.delay IS NULL THEN 'failed' ELSE 'pending' END,
        delivered_at = CASE WHEN r.ok THEN now() ELSE d.delivered_at END,
        next_attempt_at = CASE WHEN r.ok OR r.delay IS NULL THEN d.next_attempt_at
                               ELSE now() + make_interval(secs => r.delay) END,
        last_attempt_at = r.started_at, last_status = r.status_code,
        last_error = CASE WHEN r.ok THEN NULL ELSE r.error END
    FROM recorded r
    WHERE d.id = r.delivery_id AND d.attempts = r.attempt AND d.status = 'pending'
), ends AS (
    -- Per endpoint: the last outcome of the batch, and whether any succeeded.
    SELECT DISTINCT ON (endpoint_id) endpoint_id, ok AS last_ok,
           bool_or(ok) OVER (PARTITION BY endpoint_id) AS any_ok
    FROM recorded
    ORDER BY endpoint_id, n DESC
), streak AS (
    UPDATE webhook_endpoints w
    SET failing_since = CASE WHEN e.last_ok THEN NULL ELSE now() END, updated_at = now()
    FROM ends e
    WHERE w.id = e.endpoint_id
      AND CASE WHEN e.last_ok THEN w.failing_since IS NOT NULL
               ELSE w.failing_since IS NULL OR e.any_ok END
    RETURNING w.id, w.failing_since
)
SELECT 'duplicate' AS kind, o.delivery_id, NULL::text AS endpoint_id,
       NULL::timestamptz AS failing_since
FROM o
WHERE NOT EXISTS (SELECT 1 FROM attempt a
                  WHERE a.delivery_id = o.delivery_id AND a.attempt = o.attempt)
UNION ALL
SELECT 'failing', NULL, e.endpoint_id, coalesce(s.failing_since, w.failing_since)
FROM ends e
JOIN webhook_endpoints w ON w.id = e.endpoint_id
LEFT JOIN streak s ON s.id = e.endpoint_id
WHERE NOT e.last_ok;

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
