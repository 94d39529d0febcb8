-- Holds (issue 16, docs/holds-and-refunds.md "Holds and the review flow"): a payment
-- a screening rule fires for at credit is `held` until an operator releases it
-- (-> credited) or rejects it (-> `rejected`: refundable, never claimable). Neither is
-- revenue: every report and view counts only credited and claimed rows (0002, 0017),
-- so neither needs to change.
--   tx_sender       who sent the transaction (EVM: its `from`, lowercase 0x; Solana:
--                   the fee payer); NULL when the follower did not learn it
--   risk            the last screening's verdict (watcher.screening.core.Verdict.as_json)
--   held_at         when it was held
--   reviewed_by/at  the operator who released or rejected it, and when
--   review_note     the operator's reason
--   oracle_answers  {address: true|false|null} as the sanctions oracle answered before
--                   the transaction that recorded the payment (NULL: not asked)

ALTER TABLE payments DROP CONSTRAINT payments_state_check;
ALTER TABLE payments ADD CONSTRAINT payments_state_check
    CHECK (state IN ('observed', 'credited', 'claimed', 'orphaned', 'below_minimum', 'not_ours',
                     'held', 'rejected'));

ALTER TABLE payments
    ADD COLUMN tx_sender      text,
    ADD COLUMN risk           jsonb,
    ADD COLUMN held_at        timestamptz,
    ADD COLUMN reviewed_by    text CHECK (length(reviewed_by) BETWEEN 1 AND 64),
    ADD COLUMN reviewed_at    timestamptz,
    ADD COLUMN review_note    text CHECK (length(review_note) BETWEEN 1 AND 500),
    ADD COLUMN oracle_answers jsonb CHECK (oracle_answers IS NULL
                                           OR jsonb_typeof(oracle_answers) = 'object'),
    ADD CONSTRAINT payments_evm_sender_normalised
        CHECK (family <> 'evm' OR tx_sender IS NULL OR tx_sender ~ '^0x[0-9a-f]{40}$'),
    ADD CONSTRAINT payments_held_has_time CHECK (state <> 'held' OR held_at IS NOT NULL),
    ADD CONSTRAINT payments_reviewed_together
        CHECK ((reviewed_by IS NULL) = (reviewed_at IS NULL));

-- The review queue (GET /x402/admin/holds, the held gauge): oldest first.
CREATE INDEX payments_held_idx ON payments (held_at) WHERE state = 'held';
