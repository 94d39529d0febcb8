"""The EVM family as the daemon sees it: one follower per enabled chain, each with its RPC pool.

The follower itself (the converge loop, reorgs, credits) is
:mod:`watcher.chains.evm_follower`; this module only decides which chains run
and builds what each one needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from watcher import db, rpc
from watcher.chains import evm_follower, follower
from watcher.settings import EvmChain, Settings


def runner(
    chain: EvmChain, settings: Settings, pool: db.Pool, options: evm_follower.Options | None = None
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """The daemon's entry point for one chain: builds the RPC pool and the follower."""

    async def run(stop: asyncio.Event) -> None:
        rpc_pool = rpc.RpcPool(chain.name, chain.rpc_urls, chain_id=chain.chain_id)
        try:
            wallet = settings.refund_evm_wallet()  # our refunds leaving it are followed too
            made = evm_follower.EvmFollower(
                chain,
                pool,
                rpc_pool,
                min_payment_units=settings.min_payment_units,
                options=options,
                refund_wallets=[wallet] if wallet else (),
            )
            await made.run(stop)
        finally:
            await rpc_pool.aclose()

    return run


def followers(settings: Settings, pool: db.Pool) -> list[follower.Follower]:
    """The daemon's EVM followers: one per enabled chain (an RPC URL and a receiving address)."""
    return [follower.Follower(c.name, runner(c, settings, pool)) for c in enabled_chains(settings)]


def enabled_chains(settings: Settings) -> Sequence[EvmChain]:
    """The EVM chains with an RPC URL and a receiving address."""
    return [c for c in settings.evm_chains() if c.enabled]
