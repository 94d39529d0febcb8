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

-- ---------------------------------------------------------------- ledger (both chain families)

-- name: record_transfers
-- Insert transfers seen on chain, one row per (chain, tx_hash, log_index).
-- A row seen again is left alone, except an orphaned (or still observed) row
-- that reappears in another block: it is observed again at its new place.
-- Credited rows are never touched here. Returns the rows inserted or revived.
INSERT INTO payments AS p (chain, tx_hash, log_index, block_number, block_hash, block_time,
                           token, from_address, to_address, token_account, amount, state,
                           reason, memo, reference_keys)
SELECT t.chain, t.tx_hash, t.log_index, t.block_number, t.block_hash, t.block_time,
       t.token, t.from_address, t.to_address, t.token_account, t.amount, t.state,
       t.reason, t.memo, r.reference_keys
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::timestamptz[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[], $12::text[],
            $13::text[], $14::text[], $15::text[])
     AS t (chain, tx_hash, log_index, block_number, block_hash, block_time, token,
           from_address, to_address, token_account, amount, state, reason, memo, refs_csv)
CROSS JOIN LATERAL (SELECT CASE WHEN t.refs_csv IS NULL OR t.refs_csv = '' THEN '{}'::text[]
                                ELSE string_to_array(t.refs_csv, ',') END AS reference_keys) r
ON CONFLICT (chain, tx_hash, log_index) DO UPDATE
    SET block_number = excluded.block_number,
        block_hash = excluded.block_hash,
        block_time = excluded.block_time,
        state = CASE WHEN excluded.state = 'below_minimum' THEN 'below_minimum' ELSE 'observed' END,
        reason = excluded.reason,
        orphaned_at = NULL,
        updated_at = now()
    WHERE p.state = 'orphaned'
       OR (p.state IN ('observed', 'below_minimum')
           AND p.block_hash IS DISTINCT FROM excluded.block_hash)
RETURNING p.id, p.chain, p.state, p.amount;

-- name: credit_payments
-- observed -> credited for the given ids (only rows still observed).
UPDATE payments
SET state = 'credited', credited_at = now(), updated_at = now(), reason = NULL
WHERE id = ANY($1::bigint[]) AND state = 'observed'
RETURNING id, chain, amount, block_number, invoice_id;

-- name: orphan_payments
-- observed -> orphaned (block left the canonical chain or never finalized).
UPDATE payments
SET state = 'orphaned', orphaned_at = now(), updated_at = now(), reason = $2
WHERE id = ANY($1::bigint[]) AND state = 'observed'
RETURNING id, chain, amount;

-- name: flag_reorged_credits
-- A credited payment whose block left the canonical chain: flag, never delete.
UPDATE payments
SET reorged_after_credit = true, updated_at = now(), reason = $2
WHERE id = ANY($1::bigint[]) AND state IN ('credited', 'claimed') AND NOT reorged_after_credit
RETURNING id, chain, amount, tx_hash;

-- name: get_cursor
SELECT num, hash, head FROM cursors WHERE chain = $1 AND stream = $2;

-- name: set_cursor
INSERT INTO cursors (chain, stream, num, hash, head, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (chain, stream) DO UPDATE
    SET num = excluded.num, hash = excluded.hash,
        head = coalesce(excluded.head, cursors.head), updated_at = now();

-- name: payments_by_tx
SELECT * FROM payments WHERE chain = $1 AND tx_hash = $2 ORDER BY log_index;

-- ---------------------------------------------------------------- evm follower

-- name: evm_upsert_blocks
-- The recent canonical window: (number, hash, parent) of blocks the follower walked.
INSERT INTO chain_blocks (chain, num, hash, parent_hash, block_time)
SELECT $1, b.num, b.hash, b.parent_hash, b.block_time
FROM unnest($2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
     AS b (num, hash, parent_hash, block_time)
ON CONFLICT (chain, num) DO UPDATE
    SET hash = excluded.hash, parent_hash = excluded.parent_hash, block_time = excluded.block_time;

-- name: evm_prune_blocks
DELETE FROM chain_blocks WHERE chain = $1 AND num < $2;

-- name: evm_window
-- Stored blocks at or below the cursor, newest first: where to look for the fork point.
SELECT num, hash FROM chain_blocks WHERE chain = $1 AND num <= $2 ORDER BY num DESC LIMIT $3;

-- name: evm_forget_blocks
DELETE FROM chain_blocks WHERE chain = $1 AND num > $2;

-- name: evm_confirmed_ids
-- Observed payments deep enough to credit whose block is still the one in the
-- canonical window (a block we no longer hold a hash for was verified when the
-- follower walked past it, at depth >= confirmations).
SELECT p.id FROM payments p
WHERE p.chain = $1 AND p.state = 'observed' AND p.block_number <= $2
  AND NOT EXISTS (SELECT 1 FROM chain_blocks b
                  WHERE b.chain = p.chain AND b.num = p.block_number
                    AND b.hash IS DISTINCT FROM p.block_hash)
ORDER BY p.id;

-- name: evm_payments_above
-- Payments in blocks above a fork point, by state: what a reorg takes away.
SELECT id, state, block_number, block_hash FROM payments
WHERE chain = $1 AND block_number > $2 AND state IN ('observed', 'credited', 'claimed');

-- name: evm_record_credited
-- Transfers already `confirmations` deep in blocks this step verified: written
-- straight as credited, which spares rewriting every row of a large backfill.
-- A row seen before as observed or orphaned is credited at this (canonical)
-- place; credited rows are never touched. Returns the rows credited here.
INSERT INTO payments AS p (chain, tx_hash, log_index, block_number, block_hash, block_time,
                           token, from_address, to_address, amount, state, credited_at)
SELECT $1, t.tx_hash, t.log_index, t.block_number, t.block_hash, t.block_time,
       $2, t.from_address, t.to_address, t.amount, 'credited', now()
FROM unnest($3::text[], $4::int[], $5::bigint[], $6::text[], $7::timestamptz[], $8::text[],
            $9::text[], $10::numeric[])
     AS t (tx_hash, log_index, block_number, block_hash, block_time, from_address, to_address,
           amount)
ON CONFLICT (chain, tx_hash, log_index) DO UPDATE
    SET state = 'credited', credited_at = now(), block_number = excluded.block_number,
        block_hash = excluded.block_hash, block_time = excluded.block_time, reason = NULL,
        orphaned_at = NULL, updated_at = now()
    WHERE p.state IN ('observed', 'orphaned')
RETURNING p.id, p.amount, p.block_number;

-- ---------------------------------------------------------------- ops (leader election)

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

-- name: server_version
SHOW server_version;
