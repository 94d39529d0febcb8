"""The running follower under RPC faults, two endpoints and websocket drops."""

from __future__ import annotations

import asyncio
from typing import Any

from devkit.solana_node import World
from tests.integration.solana.test_follower import MIN, rows, settings_for
from watcher import db
from watcher.chains import solana


async def wait_credited(pool: db.Pool, expected: int, world: World, timeout: float = 30) -> None:
    """Let slots pass until ``expected`` rows are credited (bounded in time)."""
    async with asyncio.timeout(timeout):
        while True:
            got = await rows(pool)
            if sum(r["state"] == "credited" for r in got) >= expected:
                return
            world.node.chain.advance(1)
            await asyncio.sleep(0.05)


async def test_every_payment_credited_once_through_faults(world: World, pool: db.Pool) -> None:
    node, bank, merchant = world.node, world.bank, world.merchant.pubkey()
    backup = await node.add_endpoint()
    bank.create_ata(merchant, world.usdc)
    settings = settings_for(world, [node.url, backup.url], x402_solana_ws_url=node.ws_url)
    f = solana.make_follower(
        settings, pool, "solana", poll_interval=0.05, page_limit=7, batch_size=3
    )
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(stop))
    paid: dict[str, int] = {}
    faults = node.faults

    def pay(n: int) -> None:
        for _ in range(n):
            amount = MIN + len(paid)
            paid[bank.pay(world.alice, world.usdc, merchant, amount)] = amount

    scenarios: list[dict[str, Any]] = [
        {"fail_mode": "http500", "fail_next": 6},
        {"fail_mode": "rpc_error", "fail_next": 6},
        {"fail_mode": "reset", "fail_next": 4},
        {"delay": 0.2},
        {"down": True},
    ]
    try:
        for scenario in scenarios:
            for key, value in scenario.items():
                setattr(faults, key, value)
            pay(5)
            node.chain.advance(1)
            node.drop_websockets()
            await asyncio.sleep(0.3)
            faults.delay, faults.down = 0.0, False
        backup.faults.down = True  # both endpoints down for a while: back off, retry
        pay(3)
        await asyncio.sleep(0.5)
        backup.faults.down = False
        await wait_credited(pool, len(paid), world)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    final = await rows(pool)
    assert {r["tx_hash"]: int(r["amount"]) for r in final} == paid
    assert len(final) == len(paid) and {r["state"] for r in final} == {"credited"}


async def test_websocket_hint_wakes_a_slow_poller(world: World, pool: db.Pool) -> None:
    node, bank, merchant = world.node, world.bank, world.merchant.pubkey()
    bank.create_ata(merchant, world.usdc)
    refusing = await node.add_endpoint()
    refusing.faults.ws_refuse = True  # the first websocket URL refuses: the next one is used
    settings = settings_for(world, x402_solana_ws_url=f"{refusing.ws_url},{node.ws_url}")
    f = solana.make_follower(settings, pool, "solana", poll_interval=3600)  # only hints can wake it
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(stop))
    try:
        await asyncio.sleep(1.0)  # first pass done; subscriptions open on the second URL
        sig = bank.pay(world.alice, world.usdc, merchant, 2 * MIN)
        node.chain.advance(2)  # the finalized-commitment note wakes it again
        async with asyncio.timeout(20):
            while True:
                if [r for r in await rows(pool) if r["state"] == "credited"]:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    (row,) = await rows(pool)
    assert row["tx_hash"] == sig and int(row["amount"]) == 2 * MIN
