-- One credit path: the x402 links that triggers of 0008 and 0009 made when a payment
-- was credited or orphaned are now made by watcher/ledger.py (ledger.credit,
-- ledger.record_credited, ledger.admin_settle, ledger.orphan), in the same
-- transaction and with the same effect (queries link_x402_credits, mark_x402_orphaned).
-- Every statement that moves payments.state is a ledger function, so events, holds
-- and refunds can hang on one place; a trigger would be a second, silent path.
--
-- Kept: the triggers on reorged_after_credit (0008 payments_x402_reorged_after_credit,
-- 0010 payments_x402_relanded), which only move an x402 row's status when the flag
-- moves, and 0010's default transfer key. IF EXISTS: another migration of this
-- release may already have replaced a chain-name trigger; none may re-create them
-- (tests/integration/test_ledger_path.py lists the triggers allowed on payments).

DROP TRIGGER IF EXISTS payments_x402_link_credit ON payments;
DROP TRIGGER IF EXISTS payments_x402_link_credit_insert ON payments;
DROP TRIGGER IF EXISTS payments_x402_orphaned ON payments;
DROP TRIGGER IF EXISTS payments_x402_solana_link_credit ON payments;
DROP TRIGGER IF EXISTS payments_x402_solana_link_credit_insert ON payments;
DROP TRIGGER IF EXISTS payments_x402_solana_orphaned ON payments;

DROP FUNCTION IF EXISTS x402_link_credit();
DROP FUNCTION IF EXISTS x402_solana_link_credit();
DROP FUNCTION IF EXISTS x402_solana_mark_reorged();
-- x402_mark_reorged() stays: payments_x402_reorged_after_credit still runs it.
