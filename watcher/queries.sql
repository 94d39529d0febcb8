-- Every SQL statement the watcher and the API run, each under a `-- name: x`
-- header. Load them with watcher.db.queries(); never inline SQL elsewhere.

-- ---------------------------------------------------------------- migrations

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text        PRIMARY KEY,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
-- Blocks until no other process is migrating; released at session end.
SELECT pg_advisory_lock($1::bigint);

-- name: unlock_migrations
SELECT pg_advisory_unlock($1::bigint);

-- name: applied_migrations
SELECT version, checksum FROM schema_migrations ORDER BY version;

-- name: record_migration
INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2);

-- ---------------------------------------------------------------- health

-- name: ping
SELECT 1;

-- name: schema_migrations_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- name: session_utc
SET TIME ZONE 'UTC';
