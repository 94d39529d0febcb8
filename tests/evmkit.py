"""Helpers for EVM follower tests: a follower on anvil, and what the ledger says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.anvil import Anvil, Token
from watcher import db, rpc
from watcher.chains import evm
from watcher.settings import EvmChain

MIN_UNITS = 100_000  # $0.10, the default X402_MIN_PAYMENT_USD


def evm_chain(
    anvil: Anvil,
    usdc: Token,
    receivers: Sequence[str],
    *,
    confirmations: int = 3,
    rpc_urls: Sequence[str] | None = None,
    ws_urls: Sequence[str] = (),
    start_block: int | None = 0,
) -> EvmChain:
    return EvmChain(
        name="base",
        chain_id=anvil.chain_id,
        rpc_urls=tuple(rpc_urls or (anvil.url,)),
        ws_urls=tuple(ws_urls),
        usdc=usdc.address,
        receivers=tuple(r.lower() for r in receivers),
        confirmations=confirmations,
        start_block=start_block,
    )


@asynccontextmanager
async def follower(
    chain: EvmChain,
    pool: db.Pool,
    *,
    options: evm.Options | None = None,
    timeout: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[evm.EvmFollower]:
    rpc_pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, chain_id=chain.chain_id, timeout=timeout, transport=transport
    )
    try:
        yield evm.EvmFollower(chain, pool, rpc_pool, min_payment_units=MIN_UNITS, options=options)
    finally:
        await rpc_pool.aclose()


async def drain(f: evm.EvmFollower, timeout: float = 60.0) -> None:
    """Run the follower in burst mode: to the head, then return."""
    await asyncio.wait_for(f.run(asyncio.Event(), burst=True), timeout)


async def payments(pool: db.Pool, **where: Any) -> list[dict[str, Any]]:
    """Every payment row (optionally filtered by equality), ordered by block and log index."""
    sql = "SELECT * FROM payments"
    if where:
        sql += " WHERE " + " AND ".join(f"{k} = ${i}" for i, k in enumerate(where, 1))
    sql += " ORDER BY block_number, tx_hash, log_index"
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(sql, *where.values())]


async def cursor(pool: db.Pool, chain: str = "base") -> int | None:
    async with pool.acquire() as conn:
        num: int | None = await conn.fetchval(
            "SELECT num FROM cursors WHERE chain = $1 AND stream = 'logs'", chain
        )
        return num
