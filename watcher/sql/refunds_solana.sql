-- Solana refunds (watcher/refunds/solana_sender.py, docs/holds-and-refunds.md "Solana").


-- name: refund_solana_resign
-- A refund whose transaction can never land (its blockhash expired, the signature found
-- nowhere): new bytes in place of the old, swapped only while the row still holds the old
-- signature and no transfer was linked (two senders never both re-sign; a landed one is
-- never replaced). $5 keeps the expired signatures.
UPDATE refunds SET status = 'signed', raw_tx = $3, tx_hash = $4, detail = $5::jsonb,
                   signed_at = now(), last_error = NULL, updated_at = now()
WHERE id = $1 AND tx_hash = $2 AND status IN ('signed', 'sent') AND out_tx_hash IS NULL
RETURNING id;

-- name: refund_solana_linked
-- Outgoing transfers already linked to a refund: a batch re-read (its cursor held back by
-- an earlier signature) hands them over again, and they must not link a second refund.
SELECT out_tx_hash, out_log_index FROM refunds
WHERE chain = $1 AND out_tx_hash = ANY($2::text[]);
