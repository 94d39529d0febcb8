-- Who owned each followed Solana token account, as far as its history says.
--
-- A token account can change hands (SetAuthority AccountOwner). Old
-- getTransaction answers carry no owner in their token balances, so the
-- follower walks each followed account's history oldest first and keeps the
-- owner its instructions establish (InitializeAccount*, SetAuthority,
-- CloseAccount), moved in the same transaction as the account's cursor. NULL:
-- unknown (history not read from the account's creation), which credits no
-- old-format balance. Never filled from today's owner.
CREATE TABLE solana_account_owners (
    token_account  text        PRIMARY KEY,
    owner          text,
    slot           bigint      NOT NULL CHECK (slot >= 0),  -- of the cursor's transaction
    signature      text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
