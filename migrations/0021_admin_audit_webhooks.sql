-- The admin audit records webhook and feed-key management too (docs/webhooks.md,
-- "Managing endpoints"): rows about something other than a payment name it in
-- `subject` (an endpoint id, an event id, a read key's id) and carry what changed in
-- `detail` (never a secret). A payment mark still names its payment and both states.

ALTER TABLE admin_audit
    ALTER COLUMN payment_id DROP NOT NULL,
    ALTER COLUMN from_state DROP NOT NULL,
    ALTER COLUMN to_state DROP NOT NULL,
    ADD COLUMN subject text CHECK (length(subject) BETWEEN 1 AND 200),
    ADD COLUMN detail  jsonb;

ALTER TABLE admin_audit DROP CONSTRAINT admin_audit_action_check;
ALTER TABLE admin_audit ADD CONSTRAINT admin_audit_action_check CHECK (action IN (
    'settle', 'invalidate',
    'webhook.create', 'webhook.update', 'webhook.delete', 'webhook.rotate_secret',
    'webhook.replay', 'event.redeliver', 'event_key.create', 'event_key.revoke'));
ALTER TABLE admin_audit ADD CONSTRAINT admin_audit_what CHECK (
    CASE WHEN action IN ('settle', 'invalidate')
         THEN payment_id IS NOT NULL AND from_state IS NOT NULL AND to_state IS NOT NULL
         ELSE subject IS NOT NULL END);
CREATE INDEX admin_audit_subject_idx ON admin_audit (subject) WHERE subject IS NOT NULL;
