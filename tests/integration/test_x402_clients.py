"""The app's outside clients live as long as the app: one RPC pool per network, reused.

Two settlements (and two contract-wallet claims) in one app go through the same pool:
each endpoint's chain id is asked once, and an endpoint that failed stays benched for
the next request instead of being tried first again by a fresh pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from eth_account import Account

from api.app import create_app
from devkit.anvil import Anvil, start_anvil
from devkit.api_support import app_for, record_payment, serve
from devkit.faultproxy import FaultProxy
from devkit.x402kit import BASE_CHAIN_ID, PRICE, ROUTE, make_world, v2_header
from watcher import db


@pytest.fixture
async def base_anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture
async def proxies(base_anvil: Anvil) -> AsyncIterator[tuple[FaultProxy, FaultProxy]]:
    """(a broken endpoint answering 500, a healthy one), both counting calls by method."""
    broken = await FaultProxy(base_anvil.url, base_anvil.ws_url).start()
    healthy = await FaultProxy(base_anvil.url, base_anvil.ws_url).start()
    broken.fault = "500"
    try:
        yield broken, healthy
    finally:
        await broken.stop()
        await healthy.stop()


async def test_two_settlements_share_one_pool_and_a_failed_endpoint_stays_benched(
    base_anvil: Anvil, pool: db.Pool, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    broken, healthy = proxies
    world = await make_world(base_anvil, x402_base_rpc_url=f"{broken.url},{healthy.url}")
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        first = await http.get(ROUTE, headers=await v2_header(http, world))
        assert first.status_code == 200, first.text
        broken_after_first = sum(broken.requests.values())
        second = await http.get(ROUTE, headers=await v2_header(http, world))
        assert second.status_code == 200, second.text
    assert await world.token.balance_of(world.receiver) == 2 * PRICE
    assert healthy.requests["eth_chainId"] == 1  # one pool, its endpoint verified once
    assert healthy.requests["eth_sendRawTransaction"] == 2
    assert broken_after_first >= 1  # the first settlement tried it, first in the list
    assert sum(broken.requests.values()) == broken_after_first  # benched: never asked again


async def test_two_contract_wallet_claims_share_one_pool(
    base_anvil: Anvil, pool: db.Pool, proxies: tuple[FaultProxy, FaultProxy]
) -> None:
    _, healthy = proxies
    app = app_for(pool, x402_base_rpc_url=healthy.url, x402_base_chain_id=BASE_CHAIN_ID)
    junk = "0x" + "11" * 65  # recovers to no sender: the app asks the sender's contract
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(2):
            sender = Account.create().address.lower()
            _, tx = await record_payment(pool, from_address=sender)
            body = {"chain": "base", "tx_hash": tx, "signature": junk}
            resp = await http.post("/x402/generate-token", json=body)
            assert resp.status_code == 403, resp.text
    assert healthy.requests["eth_call"] == 2  # both claims asked a wallet
    assert healthy.requests["eth_chainId"] == 1


async def test_shutdown_closes_the_pools_and_a_new_start_opens_fresh_ones(
    base_anvil: Anvil, pool: db.Pool
) -> None:
    world = await make_world(base_anvil)
    app = create_app(world.settings, pool)
    clients = app.state.clients
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        paid = await http.get(ROUTE, headers=await v2_header(http, world))
        assert paid.status_code == 200, paid.text
        during = clients.settlement_pool("base")
        assert clients.settlement_pool("base") is during  # the one the settlement used
    after = clients.settlement_pool("base")
    assert after is not during  # the lifespan closed the first; the next is a new one
    await clients.aclose()
