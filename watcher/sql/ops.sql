-- Operations: migration bookkeeping (watcher/db.py), health and doctor probes,
-- and the per-chain leader locks (watcher/leader.py).
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- migration bookkeeping (schema_migrations, advisory lock)

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

-- name: schema_migrations_exists
SELECT to_regclass('schema_migrations') IS NOT NULL;

-- ---------------- health and doctor

-- name: ping
SELECT 1;

-- name: server_version
SHOW server_version;

-- ---------------- leader locks (one follower per chain)

-- name: try_leader_lock
-- Session-level: held until unlocked or the session ends (process killed, network gone).
SELECT pg_try_advisory_lock($1::bigint);

-- name: leader_unlock
SELECT pg_advisory_unlock($1::bigint);

-- name: leader_ping
SELECT 1;

-- name: leader_lock_holder
-- The session holding a chain's leader lock (application_name names the process).
SELECT a.pid, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.classid = (($1::bigint >> 32) & x'ffffffff'::bigint)::oid
  AND l.objid = ($1::bigint & x'ffffffff'::bigint)::oid
  AND l.objsubid = 1
  AND a.datname = current_database();

-- ---------------- the registry of networks

-- name: networks_table_exists
SELECT to_regclass('networks') IS NOT NULL;

-- name: sync_network
-- A registry network the table does not have yet (watcher/networks.py adds rows, never
-- changes one: a network's family is part of its identity).
INSERT INTO networks (name, family) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING;

-- name: network_families
SELECT name, family FROM networks;

-- ---------------- scheduled jobs (watcher/jobs.py; the lock is try_leader_lock's)

-- name: job_statement_timeout
-- A job's statements stop on the server too when the run's time is up ($1: milliseconds;
-- local to the job's transaction).
SELECT set_config('statement_timeout', $1::text, true);

-- name: job_update_analytics
-- The daily roll-up of yesterday and today (0002 / 0017); idempotent.
SELECT update_x402_analytics();

-- name: live_ping
-- The API's listening connection (api/live.py) is still there: a silent network looks idle.
SELECT 1;
