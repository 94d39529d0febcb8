"""Faulty endpoints between the follower and anvil: every payment still credited exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from devkit.anvil import Anvil, Token, start_anvil
from devkit.evmkit import drain, evm_chain, follower, payments
from devkit.faultproxy import FaultProxy
from watcher import db, errors
from watcher.chains import evm_follower


@pytest.fixture
async def proxy(anvil: Anvil) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(anvil.url, anvil.ws_url).start()
    try:
        yield p
    finally:
        await p.stop()


def _requests(endpoint: str, outcome: str) -> float:
    total = 0.0
    for family in REGISTRY.collect():
        if family.name != "watcher_rpc_requests":
            continue
        for s in family.samples:
            labels = s.labels
            if s.name.endswith("_total") and labels.get("endpoint") == endpoint:
                total += s.value if labels.get("outcome") == outcome else 0.0
    return total


async def _pay(usdc: Token, payer: str, us: str, amounts: list[int]) -> set[tuple[str, int]]:
    out = set()
    for amount in amounts:
        receipt = await usdc.transfer(payer, us, amount)
        out.add((receipt["transactionHash"], amount))
    return out


async def _credited(pool: db.Pool) -> list[tuple[str, int]]:
    return [(r["tx_hash"], int(r["amount"])) for r in await payments(pool, state="credited")]


async def _wait_credited(pool: db.Pool, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < n:
        assert time.monotonic() < deadline, f"only {seen} of {n} credited"
        # Our own pooled session may have been killed by the test: read again.
        with contextlib.suppress(*db.TRANSIENT_ERRORS):
            seen = len(await _credited(pool))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "garbage"])
async def test_failing_primary_fails_over_to_the_healthy_endpoint(
    fault: str, anvil: Anvil, usdc: Token, pool: db.Pool, proxy: FaultProxy
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    truth = await _pay(usdc, payer, us, [1_000_000, 2_000_000, 3_000_000])
    await anvil.mine(3)
    proxy.fault, proxy.timeout_seconds = fault, 2.0
    chain = evm_chain(anvil, usdc, [us], rpc_urls=[proxy.url, anvil.url])
    healthy_before = _requests(anvil.url, "ok")
    async with follower(chain, pool, timeout=0.5) as f:
        await drain(f)
    got = await _credited(pool)
    assert sorted(got) == sorted(truth) and len(got) == len(set(got))
    assert proxy.faults_served > 0
    assert _requests(anvil.url, "ok") > healthy_before  # the healthy endpoint did the work


async def test_intermittent_faults_on_the_only_endpoint_are_retried(
    anvil: Anvil, usdc: Token, pool: db.Pool, proxy: FaultProxy
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    proxy.fault, proxy.fault_rate = "500", 0.4
    chain = evm_chain(anvil, usdc, [us], rpc_urls=[proxy.url], confirmations=2)
    truth: set[tuple[str, int]] = set()
    stop = asyncio.Event()
    async with follower(chain, pool, options=evm_follower.Options(poll_interval=0.05)) as f:
        task = asyncio.create_task(f.run(stop))
        for i in range(6):
            truth |= await _pay(usdc, payer, us, [1_000_000 + i])
            await anvil.mine(1)
        for fault in ("429", "garbage", "timeout"):
            proxy.fault, proxy.timeout_seconds = fault, 1.0
            truth |= await _pay(usdc, payer, us, [5_000_000])
            await anvil.mine(2)
            await asyncio.sleep(0.3)
        proxy.fault = None
        await anvil.mine(2)
        await _wait_credited(pool, len(truth))
        stop.set()
        await asyncio.wait_for(task, 10)
    got = await _credited(pool)
    assert sorted(got) == sorted(truth) and len(got) == len(set(got))
    assert proxy.faults_served > 0


async def test_stale_and_backwards_head_delay_but_never_double_or_drop(
    anvil: Anvil, usdc: Token, pool: db.Pool, proxy: FaultProxy
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], rpc_urls=[proxy.url], confirmations=2)
    reorgs_before = REGISTRY.get_sample_value("watcher_reorgs_total", {"chain": "base"}) or 0
    truth = await _pay(usdc, payer, us, [1_000_000, 2_000_000])
    await anvil.mine(3)
    async with follower(chain, pool) as f:
        await drain(f)
        assert len(await _credited(pool)) == 2
        proxy.head_lag = 4  # the head goes backwards by four blocks, then stays stale
        truth |= await _pay(usdc, payer, us, [3_000_000])
        await anvil.mine(2)
        await drain(f)
        assert len(await _credited(pool)) == 2  # the stale view does not reach the payment
        assert {r["state"] for r in await payments(pool)} == {"credited"}
        proxy.head_lag = 0
        await drain(f)
    got = await _credited(pool)
    assert sorted(got) == sorted(truth)
    after = REGISTRY.get_sample_value("watcher_reorgs_total", {"chain": "base"}) or 0
    assert after == reorgs_before  # a lower head is not a reorg


async def test_dropped_websocket_reconnects_and_fills_the_gap(
    anvil: Anvil, usdc: Token, pool: db.Pool, proxy: FaultProxy
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], ws_urls=[proxy.ws_url], confirmations=2)
    reconnects = REGISTRY.get_sample_value("watcher_ws_reconnects_total", {"chain": "base"}) or 0
    stop = asyncio.Event()
    opts = evm_follower.Options(poll_interval=60.0, ws_safety_poll=60.0)  # only the socket wakes it
    truth: set[tuple[str, int]] = set()
    async with follower(chain, pool, options=opts) as f:
        task = asyncio.create_task(f.run(stop))
        for i in range(3):
            truth |= await _pay(usdc, payer, us, [1_000_000 + i])
            await anvil.mine(2)
            await _wait_credited(pool, len(truth))
            await proxy.drop_websockets()
            proxy.refuse_websockets = True
            truth |= await _pay(usdc, payer, us, [2_000_000 + i])  # while the socket is down
            await anvil.mine(2)
            proxy.refuse_websockets = False
            await _wait_credited(pool, len(truth))
        stop.set()
        await asyncio.wait_for(task, 10)
    got = await _credited(pool)
    assert sorted(got) == sorted(truth) and len(got) == len(set(got))
    after = REGISTRY.get_sample_value("watcher_ws_reconnects_total", {"chain": "base"}) or 0
    assert after >= reconnects + 3


async def test_endpoint_on_the_wrong_chain_is_refused(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    truth = await _pay(usdc, payer, us, [4_000_000])
    await anvil.mine(3)
    other = await start_anvil(chain_id=999)
    try:
        alone = evm_chain(anvil, usdc, [us], rpc_urls=[other.url])
        async with follower(alone, pool) as f:
            with pytest.raises(errors.NoHealthyEndpoint, match="chain id 999"):
                await f.step()
        assert await payments(pool) == []
        both = evm_chain(anvil, usdc, [us], rpc_urls=[other.url, anvil.url])
        async with follower(both, pool) as f:
            await drain(f)
            assert f.rpc.endpoints[0].refused == "chain id 999, expected 31337"
    finally:
        await other.close()
    assert sorted(await _credited(pool)) == sorted(truth)
    healthy = REGISTRY.get_sample_value(
        "watcher_rpc_endpoint_healthy", {"chain": "base", "endpoint": other.url}
    )
    assert healthy == 0


async def test_stale_primary_is_demoted_and_the_healthy_endpoint_serves(
    anvil: Anvil, usdc: Token, pool: db.Pool, proxy: FaultProxy
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    await anvil.mine(20)
    truth = await _pay(usdc, payer, us, [7_000_000])
    await anvil.mine(2)
    proxy.head_lag = 12  # the primary says the chain ended before the payment
    chain = evm_chain(anvil, usdc, [us], rpc_urls=[proxy.url, anvil.url], confirmations=2)
    async with follower(chain, pool) as f:
        await drain(f)
        assert f.state.head == await anvil.block_number()
    assert sorted(await _credited(pool)) == sorted(truth)


async def test_log_range_refusals_shrink_to_the_suggested_range(
    anvil: Anvil, usdc: Token, pool: db.Pool, proxy: FaultProxy
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    truth: set[tuple[str, int]] = set()
    for i in range(12):
        truth |= await _pay(usdc, payer, us, [1_000_000 + i])
        await anvil.mine(1)
    await anvil.mine(10)
    proxy.max_log_span = 3
    chain = evm_chain(anvil, usdc, [us], rpc_urls=[proxy.url], confirmations=2)
    opts = evm_follower.Options(initial_range=16, window_margin=2)
    async with follower(chain, pool, options=opts) as f:
        await drain(f)
        assert f.range <= 3  # it kept to what the provider accepts
    assert proxy.range_refusals > 0
    got = await _credited(pool)
    assert sorted(got) == sorted(truth) and len(got) == len(set(got))


async def test_database_connections_killed_mid_follow_are_retried_not_fatal(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], confirmations=2)
    truth: set[tuple[str, int]] = set()
    stop = asyncio.Event()
    admin = await asyncpg.connect(database_url)
    try:
        async with follower(chain, pool, options=evm_follower.Options(poll_interval=0.02)) as f:
            task = asyncio.create_task(f.run(stop))
            for i in range(5):
                truth |= await _pay(usdc, payer, us, [1_000_000 + i])
                await anvil.mine(1)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            await anvil.mine(2)
            await _wait_credited(pool, len(truth))
            assert not task.done()  # the follower rode it out
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        await admin.close()
    got = await _credited(pool)
    assert sorted(got) == sorted(truth) and len(got) == len(set(got))
