"""What the refund tests share: a world on anvil (receiver, payer, refund wallet), a
follower that watches the refund wallet, settings and admin headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from eth_account import Account

from devkit import evmkit
from devkit.anvil import Anvil, Token
from devkit.api_support import ADMIN_KEY, make_settings
from watcher import db, rpc
from watcher.chains import evm_follower
from watcher.settings import EvmChain, Settings

OPERATOR = "alice@example.com"
HEADERS = {"x-admin-key": ADMIN_KEY, "x-admin-operator": OPERATOR}
CONFIRMATIONS = 2


@dataclass
class World:
    anvil: Anvil
    usdc: Token
    receiver: str  # our receiving address (lowercase)
    payer: str  # an unlocked anvil account (lowercase)
    wallet: Any  # the refund wallet's eth_account LocalAccount

    @property
    def wallet_address(self) -> str:
        return str(self.wallet.address).lower()

    def chain(self, rpc_url: str | None = None) -> EvmChain:
        return evmkit.evm_chain(
            self.anvil,
            self.usdc,
            [self.receiver],
            confirmations=CONFIRMATIONS,
            rpc_urls=[rpc_url or self.anvil.url],
        )

    def settings(self, *, key: bool = True, rpc_url: str | None = None, **over: Any) -> Settings:
        values: dict[str, Any] = {
            "x402_base_rpc_url": rpc_url or self.anvil.url,
            "x402_base_chain_id": self.anvil.chain_id,
            "x402_base_usdc_address": self.usdc.address,
            "x402_base_payment_address": self.receiver,
            "x402_base_confirmations": CONFIRMATIONS,
        }
        if key:
            values["x402_refund_evm_private_key"] = "0x" + bytes(self.wallet.key).hex()
        else:
            values["x402_refund_evm_address"] = self.wallet_address
        values.update(over)
        return make_settings(**values)


async def world(anvil: Anvil, usdc: Token, *, wallet_usdc: int = 50_000_000) -> World:
    """A receiver, a payer (anvil's third account) and a refund wallet with ETH and USDC."""
    wallet = Account.create()
    w = World(anvil, usdc, Account.create().address.lower(), anvil.accounts[2], wallet)
    await anvil.rpc("anvil_setBalance", w.wallet_address, hex(10**19))
    if wallet_usdc:
        await usdc.mint(w.wallet_address, wallet_usdc)
    return w


@asynccontextmanager
async def follower(w: World, pool: db.Pool) -> AsyncIterator[evm_follower.EvmFollower]:
    """The real EVM follower on anvil, watching our refund wallet too."""
    chain = w.chain()
    rpc_pool = rpc.RpcPool(chain.name, chain.rpc_urls, chain_id=chain.chain_id, timeout=5)
    try:
        yield evm_follower.EvmFollower(
            chain,
            pool,
            rpc_pool,
            min_payment_units=evmkit.MIN_UNITS,
            refund_wallets=[w.wallet_address],
        )
    finally:
        await rpc_pool.aclose()


async def pay(w: World, pool: db.Pool, amount: int, *, sender: str | None = None) -> int:
    """``sender`` pays the receiver; mined past its confirmations and followed: the
    payment's id, credited."""
    receipt = await w.usdc.transfer(sender or w.payer, w.receiver, amount)
    await w.anvil.mine(CONFIRMATIONS)
    async with follower(w, pool) as f:
        await evmkit.drain(f)
    row = await pool.fetchrow(
        "SELECT id, state FROM payments WHERE tx_hash = $1", receipt["transactionHash"].lower()
    )
    assert row is not None and row["state"] == "credited", row
    return int(row["id"])


async def follow(w: World, pool: db.Pool) -> None:
    """Mine past the confirmations and let the follower catch up."""
    await w.anvil.mine(CONFIRMATIONS + 1)
    async with follower(w, pool) as f:
        await evmkit.drain(f)


async def status(pool: db.Pool, refund_id: int) -> str:
    return str(await pool.fetchval("SELECT status FROM refunds WHERE id = $1", refund_id))


async def wait_status(pool: db.Pool, refund_id: int, wanted: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (got := await status(pool, refund_id)) != wanted:
        if loop.time() > deadline:
            raise TimeoutError(f"refund {refund_id} is {got}, not {wanted}")
        await asyncio.sleep(0.2)
