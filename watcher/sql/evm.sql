-- The EVM follower (watcher/chains/evm*.py): the canonical block window, what is
-- deep enough to credit, and what a reorg takes away.
-- Each statement under a `-- name: x` header. All files in watcher/sql/ are one
-- namespace, loaded by watcher.db.q(name): a name is defined once across them all.
-- Never inline SQL elsewhere.

-- ---------------- canonical block window

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

-- ---------------- confirmation and credit

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

-- name: evm_relanded_ids
-- Flagged payments seen again on the canonical chain, now deep enough at their new
-- place and not contradicted by the canonical window (as evm_confirmed_ids).
SELECT p.id FROM payments p
WHERE p.chain = $1 AND p.reorged_after_credit AND p.relanded_at IS NOT NULL
  AND p.block_number <= $2 AND p.state IN ('credited', 'claimed', 'rejected')
  AND NOT EXISTS (SELECT 1 FROM chain_blocks b
                  WHERE b.chain = p.chain AND b.num = p.block_number
                    AND b.hash IS DISTINCT FROM p.block_hash)
ORDER BY p.id;

-- ---------------- reorgs

-- name: evm_payments_above
-- Payments in blocks above a fork point, by state: what a reorg takes away.
SELECT id, state, block_number, block_hash FROM payments
WHERE chain = $1 AND block_number > $2
  AND state IN ('observed', 'below_minimum', 'held', 'credited', 'claimed', 'rejected');
