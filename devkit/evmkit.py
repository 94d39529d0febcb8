"""Helpers for EVM follower tests: a follower on anvil, and what the ledger says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from devkit.anvil import Anvil, Token
from watcher import db, rpc
from watcher.chains import evm_follower
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
    options: evm_follower.Options | None = None,
    timeout: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[evm_follower.EvmFollower]:
    rpc_pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, chain_id=chain.chain_id, timeout=timeout, transport=transport
    )
    try:
        yield evm_follower.EvmFollower(
            chain, pool, rpc_pool, min_payment_units=MIN_UNITS, options=options
        )
    finally:
        await rpc_pool.aclose()


async def drain(f: evm_follower.EvmFollower, timeout: float = 60.0) -> None:
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


class Signer:
    """A funded key of our own, so a test can keep a signed transaction and broadcast it
    again after a reorg dropped it (what anyone can do with a public transaction)."""

    def __init__(self, anvil: Anvil, token: Token) -> None:
        from eth_account import Account

        self.anvil, self.token = anvil, token
        self.account = Account.create()
        self.address = self.account.address.lower()
        self.nonce = 0

    async def fund(self, usdc_units: int, *, settle_blocks: int = 16) -> None:
        """ETH for gas and USDC, then ``settle_blocks`` empty blocks so that a test's
        reorgs (shallower than that) never take the funding away."""
        await self.anvil.rpc("anvil_setBalance", self.account.address, hex(10**20))
        await self.token.mint(self.address, usdc_units)
        await self.anvil.mine(settle_blocks)

    def sign(self, data: str, *, gas: int = 200_000, gas_price_gwei: int = 2) -> str:
        """A signed call to the token (raw hex); the nonce advances."""
        tx = {
            "to": self.token.checksum,
            "data": data,
            "gas": gas,
            "gasPrice": gas_price_gwei * 10**9,
            "nonce": self.nonce,
            "chainId": self.anvil.chain_id,
        }
        self.nonce += 1
        return "0x" + bytes(self.account.sign_transaction(tx).raw_transaction).hex()

    async def broadcast(self, raw: str) -> str:
        tx_hash: str = await self.anvil.rpc("eth_sendRawTransaction", raw)
        return tx_hash.lower()


async def mine_together(anvil: Anvil, sends: Sequence[tuple[str, Any]]) -> None:
    """Send (method, param) transactions with automine off, then mine them in one block
    (highest fee first, as anvil orders a block)."""
    await anvil.rpc("evm_setAutomine", False)
    try:
        for method, param in sends:
            await anvil.rpc(method, param)
        await anvil.mine(1)
    finally:
        await anvil.rpc("evm_setAutomine", True)


async def canonical_transfers(
    anvil: Anvil, token: Token, receivers: Sequence[str], upto: int
) -> list[tuple[str, int, int, int]]:
    """Every USDC transfer to ``receivers`` on anvil's canonical chain up to block ``upto``,
    as (tx_hash, log_index, block, amount): the ground truth a ledger is compared with."""
    from devkit.anvil import TRANSFER_TOPIC

    wanted = {r.lower() for r in receivers}
    logs = await anvil.rpc(
        "eth_getLogs",
        {
            "fromBlock": "0x0",
            "toBlock": hex(upto),
            "address": token.address,
            "topics": [TRANSFER_TOPIC],
        },
    )
    out = []
    for lg in logs:
        if "0x" + lg["topics"][2][-40:] in wanted and int(lg["data"], 16) > 0:
            out.append(
                (
                    lg["transactionHash"].lower(),
                    int(lg["logIndex"], 16),
                    int(lg["blockNumber"], 16),
                    int(lg["data"], 16),
                )
            )
    return sorted(out)
