"""The Solana follower's accounts: which it follows, and what a transaction pays one of them.

Followed: the owner's associated token account for the USDC mint, the accounts
listed in ``X402_SOLANA_TOKEN_ACCOUNTS``, and every account that already has
credited (or observed) payments. Never simply what ``getTokenAccountsByOwner``
returns: anyone can open a token account owned by our wallet, and a pass must
not cost more because someone did (``watcher doctor`` lists those it ignores).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address

from watcher import db, ledger, rpc
from watcher.chains import solana_owners, solana_tx

log = structlog.get_logger(__name__)

MULTIPLE_ACCOUNTS_MAX = 100  # getMultipleAccounts takes at most 100 keys


def associated_token_account(owner: str, mint: str) -> str:
    return str(get_associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(mint)))


async def watched(pool: db.Pool, chain: str, ata: str, listed: Sequence[str]) -> list[str]:
    """ATA, then the listed accounts, then those with payment history (no duplicates)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(db.q("solana_history_accounts"), chain)
    history = [str(r["token_account"]) for r in rows]
    return list(dict.fromkeys([ata, *listed, *history]))


async def check_today(client: rpc.RpcPool, accounts: Sequence[str], owner: str, mint: str) -> None:
    """Log followed accounts that are not (or no longer) our USDC accounts today.

    They stay followed: each transaction is judged on who owned the account then.
    """
    for start in range(0, len(accounts), MULTIPLE_ACCOUNTS_MAX):
        chunk = list(accounts[start : start + MULTIPLE_ACCOUNTS_MAX])
        res = await client.request(
            "getMultipleAccounts", [chunk, {"encoding": "jsonParsed", "commitment": "confirmed"}]
        )
        values = (res or {}).get("value") or [None] * len(chunk)
        for acct, value in zip(chunk, values, strict=False):
            info = (((value or {}).get("data") or {}).get("parsed") or {}).get("info") or {}
            if value is not None and (info.get("owner") != owner or info.get("mint") != mint):
                log.warning(
                    "solana_account_not_ours_today",
                    account=acct,
                    owner=info.get("owner"),
                    mint=info.get("mint"),
                )


def transfers(
    chain: str,
    tx: solana_tx.TxView,
    account: str,
    before: str | None,
    owner: str,
    mint: str,
    min_units: int,
) -> tuple[list[ledger.Transfer], str | None]:
    """``account``'s USDC increase in ``tx`` as a transfer to record, and its owner after.

    Only this account's balance: the owner its history established applies to it
    alone, and another account in the same transaction is not followed through it.
    """
    after = solana_owners.owner_after(tx, account, before)
    change = tx.change_of(account)
    if tx.failed or change is None or change.mint != mint or change.delta <= 0:
        return [], after
    verdict = solana_owners.judge(tx, change, owner, before)
    p = solana_tx.payment(tx, change, owner)
    state, reason = ledger.judge(p.amount, min_units)
    if not verdict.ours:
        state, reason = "not_ours", f"not ours when it moved: {verdict.reason}"
    transfer = ledger.Transfer(
        chain=chain,
        tx_hash=p.signature,
        log_index=p.account_index,
        block_number=p.slot,
        block_hash=None,
        token=p.mint,
        to_address=p.owner,
        amount=p.amount,
        from_address=p.payer,
        tx_sender=p.fee_payer,  # screening (issue 16): the fee payer
        block_time=datetime.fromtimestamp(p.block_time, UTC) if p.block_time is not None else None,
        token_account=p.token_account,
        memo=p.memo,
        reference_keys=p.references,
        state=state,
        reason=reason,
    )
    return [transfer], after
