-- Every admin action names its operator (issue 16: one shared admin key cannot tell
-- people apart; watcher/operator.py). Rows written before this migration have none.
-- The list of actions moves to the code that writes them (holds, refunds and more
-- join it): the database keeps only their shape, and a payment mark still names its
-- payment and both states (admin_audit_what, 0021).

ALTER TABLE admin_audit
    ADD COLUMN operator text CHECK (length(operator) BETWEEN 1 AND 64);

ALTER TABLE admin_audit DROP CONSTRAINT admin_audit_action_check;
ALTER TABLE admin_audit ADD CONSTRAINT admin_audit_action_check
    CHECK (action ~ '^[a-z][a-z_]*(\.[a-z_]+)?$');
