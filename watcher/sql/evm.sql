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

-- name: evm_record_credited
-- Transfers already `confirmations` deep in blocks this step verified: written
-- straight as credited, which spares rewriting every row of a large backfill.
-- A row seen before as observed or orphaned is credited at this (canonical) place.
-- A credited row seen at another place, or flagged reorged_after_credit, keeps its
-- state and moves here (relanded_at; the flag is cleared by the same step's
-- evm_relanded_ids). Returns only the rows credited here for the first time.
WITH up AS (
    INSERT INTO payments AS p (chain, tx_hash, log_index, transfer_key, block_number,
                               block_hash, block_time, token, from_address, to_address, amount,
                               state, credited_at)
    SELECT $1, t.tx_hash, t.log_index, t.transfer_key, t.block_number, t.block_hash,
           t.block_time, $2, t.from_address, t.to_address, t.amount, 'credited', now()
    FROM unnest($3::text[], $4::int[], $5::bigint[], $6::text[], $7::timestamptz[], $8::text[],
                $9::text[], $10::numeric[], $11::text[])
         AS t (tx_hash, log_index, block_number, block_hash, block_time, from_address,
               to_address, amount, transfer_key)
    ON CONFLICT (chain, tx_hash, transfer_key) DO UPDATE
        SET state = CASE WHEN p.state IN ('credited', 'claimed') THEN p.state
                         ELSE 'credited' END,
            credited_at = CASE WHEN p.state IN ('credited', 'claimed') THEN p.credited_at
                               ELSE now() END,
            log_index = excluded.log_index,
            block_number = excluded.block_number,
            block_hash = excluded.block_hash,
            block_time = excluded.block_time,
            reason = CASE WHEN p.state IN ('credited', 'claimed')
                          THEN 're-included in block ' || excluded.block_number
                               || ' after a reorg: suspended until it is confirmed there'
                          END,
            reorged_after_credit = p.reorged_after_credit OR p.state IN ('credited', 'claimed'),
            relanded_at = CASE WHEN p.state IN ('credited', 'claimed') THEN now()
                               ELSE p.relanded_at END,
            orphaned_at = NULL,
            updated_at = now()
        WHERE p.state IN ('observed', 'orphaned')
           OR (p.state IN ('credited', 'claimed')
               AND (p.reorged_after_credit OR p.block_hash IS DISTINCT FROM excluded.block_hash))
    RETURNING p.id, p.amount, p.block_number, p.relanded_at
)
SELECT id, amount, block_number FROM up WHERE relanded_at IS NULL;

-- name: evm_relanded_ids
-- Flagged payments seen again on the canonical chain, now deep enough at their new
-- place and not contradicted by the canonical window (as evm_confirmed_ids).
SELECT p.id FROM payments p
WHERE p.chain = $1 AND p.reorged_after_credit AND p.relanded_at IS NOT NULL
  AND p.block_number <= $2 AND p.state IN ('credited', 'claimed')
  AND NOT EXISTS (SELECT 1 FROM chain_blocks b
                  WHERE b.chain = p.chain AND b.num = p.block_number
                    AND b.hash IS DISTINCT FROM p.block_hash)
ORDER BY p.id;

-- ---------------- reorgs

-- name: evm_payments_above
-- Payments in blocks above a fork point, by state: what a reorg takes away.
SELECT id, state, block_number, block_hash FROM payments
WHERE chain = $1 AND block_number > $2
  AND state IN ('observed', 'below_minimum', 'credited', 'claimed');
