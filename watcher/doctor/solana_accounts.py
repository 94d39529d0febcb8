"""Doctor rows about the Solana token accounts in our name: followed, and ignored.

The follower watches the owner's associated USDC token account, the accounts
listed in ``X402_SOLANA_TOKEN_ACCOUNTS`` and every account with credited
payments; never every account ``getTokenAccountsByOwner`` returns, since anyone
can open one in our name. These rows say which accounts it ignores (payments
into them are not credited) and which it follows only because of their
history, so nobody's money is dropped silently.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx

from watcher import chain_settings, db, networks, rpc
from watcher.chains import solana_accounts as chain_accounts
from watcher.doctor.report import Check, secret
from watcher.settings import Settings

SHOWN = 20  # accounts named in one row; the rest are counted


def _shown(accounts: list[str]) -> str:
    more = len(accounts) - SHOWN
    return ", ".join(accounts[:SHOWN]) + (f" and {more} more" if more > 0 else "")


async def _history_at(dsn: str, seconds: float, chain: str) -> list[str]:
    conn = await asyncpg.connect(dsn, timeout=seconds)
    try:
        found = await conn.fetch(db.q("solana_history_accounts"), chain)
        return [str(r["token_account"]) for r in found]
    finally:
        await conn.close()


async def history_accounts(settings: Settings, seconds: float, chain: str) -> list[str] | None:
    """Token accounts with credited payments (None when the database cannot say)."""
    try:
        dsn = secret(settings.database_url)
        if dsn is not None:
            return await _history_at(dsn, seconds, chain)
        embedded = db.EmbeddedPostgres(settings.watcher_data_dir)
        if not await asyncio.to_thread((embedded.pgdata / "PG_VERSION").exists):
            return []  # no database yet: no history either
        local = await asyncio.to_thread(embedded.start)
        try:
            return await _history_at(local, seconds, chain)
        finally:
            await asyncio.to_thread(embedded.stop)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None


def _balance(item: dict[str, Any]) -> int:
    data = (item.get("account") or {}).get("data") or {}
    info = (data.get("parsed") or {}).get("info") or {} if isinstance(data, dict) else {}
    return int((info.get("tokenAmount") or {}).get("amount") or 0)


async def _ours_today(settings: Settings, seconds: float, transport: Any, name: str) -> list[str]:
    """The owner's USDC token accounts today, those holding the most USDC first."""
    chain = settings.solana_chain(name)
    pool = rpc.RpcPool(name, chain.rpc_urls, timeout=seconds, transport=transport, kind="solana")
    try:
        res = await pool.request(
            "getTokenAccountsByOwner",
            [
                chain.owner,
                {"mint": chain.usdc_mint},
                {"encoding": "jsonParsed", "commitment": "confirmed"},
            ],
        )
    finally:
        await pool.aclose()
    items = sorted((res or {}).get("value") or [], key=lambda i: (-_balance(i), str(i["pubkey"])))
    return [str(item["pubkey"]) for item in items]


async def token_account_rows(
    settings: Settings,
    name: str,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Check]:
    """Ignored foreign accounts, accounts followed for their history, listed ones not ours."""
    chain = settings.solana_chain(name)
    listed_var = chain_settings.prefix(networks.get(name)).upper() + "TOKEN_ACCOUNTS"
    if chain.owner is None or not chain.rpc_urls:
        return []
    ata = chain_accounts.associated_token_account(chain.owner, chain.usdc_mint)
    today = await _ours_today(settings, seconds, transport, name)
    history = await history_accounts(settings, seconds, name)
    listed = [a for a in chain.token_accounts if a != ata]
    followed = {ata, *listed, *(history or [])}
    rows: list[Check] = []
    ignored = [a for a in today if a not in followed]
    row = f"{name} ignored token accounts"
    if ignored:
        value = f"{len(ignored)} USDC token accounts in your name are not followed: "
        fix = (
            "payments into them are not credited (anyone can open token accounts in your "
            f"name); if one is really yours, add it to {listed_var}"
        )
        rows.append(Check("contracts", row, "warn", value + _shown(ignored), fix))
    else:
        rows.append(Check("contracts", row, "ok", "none: every account in your name is followed"))
    if history is None:
        fix = "start the database; the follower still follows accounts with credited payments"
        rows.append(Check("contracts", f"{name} accounts with history", "warn", "unknown", fix))
    elif kept := [a for a in history if a != ata and a not in listed]:
        fix = f"list them in {listed_var} to follow them on purpose"
        value = f"followed because they hold credited payments: {_shown(kept)}"
        rows.append(Check("contracts", f"{name} accounts with history", "warn", value, fix))
    if gone := [a for a in listed if a not in today]:
        fix = (
            "no longer a USDC token account of the wallet: deposits after it changed hands "
            f"are not credited; remove it from {listed_var}"
        )
        value = _shown(gone)
        rows.append(Check("contracts", f"{name} listed token accounts", "warn", value, fix))
    return rows
