-- An Idempotency-Key makes a retry safe, never free: the first call under a key
-- stores its answer in its usage row, and a replay returns that answer without
-- running the handler again (api/idempotency.py).
--
--   request_hash    SHA-256 of the request (method, path with query, body): the
--                   same key with another request is refused;
--   replay_state    running (charged, the handler has not answered yet; a crash
--                   leaves it so) -> stored (the answer below can be replayed)
--                   | unreplayable (streamed or too large to keep);
--   key_expires_at  24 h after the call or the token's end, whichever is first;
--                   afterwards the key is forgotten;
--   response_*      the stored answer: status, the headers that matter, body.
ALTER TABLE token_usage
    ADD COLUMN request_hash     bytea CHECK (octet_length(request_hash) = 32),
    ADD COLUMN replay_state     text CHECK (replay_state IN ('running', 'stored', 'unreplayable')),
    ADD COLUMN key_expires_at   timestamptz,
    ADD COLUMN response_status  integer,
    ADD COLUMN response_headers jsonb,
    ADD COLUMN response_body    bytea;

-- Keys used before this migration have no stored answer and no fingerprint: a
-- replay of one is refused as not replayable until it expires (never a free run).
UPDATE token_usage u
SET replay_state = 'unreplayable',
    key_expires_at = least(u.created_at + interval '24 hours', a.expires_at)
FROM access_tokens a
WHERE a.id = u.token_id AND u.idempotency_key IS NOT NULL;

-- Cleanup forgets expired keys (and drops their answers) through this index.
CREATE INDEX token_usage_key_expires_idx ON token_usage (key_expires_at)
    WHERE idempotency_key IS NOT NULL;
