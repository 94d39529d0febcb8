-- The charge endpoint for backends: service keys and the idempotency of their charges.

-- name: gateway_service_key_insert
INSERT INTO service_keys (name, key_hash, key_prefix, all_routes, routes)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, created_at;

-- name: gateway_service_key_list
SELECT id, name, key_prefix, all_routes, routes, created_at, last_used_at, revoked_at,
       revoked_reason
FROM service_keys ORDER BY id;

-- name: gateway_service_key_revoke
-- Once: a second revoke keeps the first time and reason.
UPDATE service_keys SET revoked_at = now(), revoked_reason = $2
WHERE id = $1 AND revoked_at IS NULL
RETURNING id;

-- name: gateway_service_key_use
-- The key behind a bearer secret, its last use stamped (at most once a minute, so a
-- busy backend does not rewrite the row on every call). Revoked keys come back too:
-- the caller answers 403 for them, 401 for no row.
WITH k AS (
    SELECT id, name, all_routes, routes, revoked_at FROM service_keys WHERE key_hash = $1
), stamp AS (
    UPDATE service_keys s SET last_used_at = now()
    FROM k
    WHERE s.id = k.id AND k.revoked_at IS NULL
      AND (s.last_used_at IS NULL OR s.last_used_at < now() - interval '1 minute')
)
SELECT id, name, all_routes, routes, revoked_at FROM k;

-- name: gateway_charge_claim
-- Take the idempotency key for this call ('running'); no row: a twin holds it.
INSERT INTO gateway_charges (service_key_id, idempotency_key, request_hash, route, expires_at)
VALUES ($1, $2, $3, $4, now() + $5::interval)
ON CONFLICT (service_key_id, idempotency_key) DO NOTHING
RETURNING id;

-- name: gateway_charge_lookup
SELECT id, request_hash, route, state, response, expires_at <= now() AS expired,
       created_at < now() - $3::interval AS overdue
FROM gateway_charges WHERE service_key_id = $1 AND idempotency_key = $2;

-- name: gateway_charge_forget
-- An expired key, or a call that charged nothing: the key is free again.
DELETE FROM gateway_charges WHERE id = $1 AND (state = 'running' OR expires_at <= now());

-- name: gateway_charge_store
UPDATE gateway_charges SET state = 'stored', response = $2, rail = $3, charge_id = $4,
       usage_id = $5
WHERE id = $1 AND state = 'running';

-- name: gateway_charge_prune
DELETE FROM gateway_charges WHERE expires_at <= now();

-- name: gateway_charge_for_refund
-- The charge a service key made, locked for its one refund.
SELECT id, rail, usage_id, refunded_at, created_at > now() - $3::interval AS in_window
FROM gateway_charges
WHERE service_key_id = $1 AND charge_id = $2 AND state = 'stored'
FOR UPDATE;

-- name: gateway_charge_mark_refunded
-- Once; the idempotency key is freed, so the backend's retry is charged anew.
UPDATE gateway_charges SET refunded_at = now(), idempotency_key = NULL
WHERE id = $1 AND refunded_at IS NULL
RETURNING refunded_at;
