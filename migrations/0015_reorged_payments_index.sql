-- 0015: every EVM step asks for flagged payments that re-landed (evm_relanded_ids).
-- Without an index of its own that question reads every credited row of the chain;
-- flagged rows are few, so a partial index answers it at once.
CREATE INDEX payments_reorged_idx ON payments (chain, block_number) WHERE reorged_after_credit;
