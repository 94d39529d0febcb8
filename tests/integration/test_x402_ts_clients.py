"""The official TypeScript x402 clients pay our paid route on anvil (EVM, EIP-3009).

Run by Node from the test (devkit/x402_ts.py): ``@x402/fetch`` with ``@x402/evm`` pays the
v2 header (PAYMENT-SIGNATURE) and, when the server offers only the v1 body, the v1 way
(X-PAYMENT); the older ``x402-fetch`` speaks v1 only. Each settles once through our relayer,
answers 200 with a successful PAYMENT-RESPONSE, and leaves one settled authorization row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.app import create_app
from devkit import x402_ts
from devkit.anvil import Anvil, start_anvil
from devkit.api_support import serve
from devkit.x402kit import BASE_CHAIN_ID, PRICE, ROUTE, World, make_world
from watcher import db


@pytest.fixture
async def base_anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture
async def world(base_anvil: Anvil) -> World:
    return await make_world(base_anvil)


async def authorizations(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM x402_authorizations ORDER BY id")]


@pytest.mark.parametrize(
    ("client", "version", "network", "header"),
    [
        ("fetch-v2", 2, f"eip155:{BASE_CHAIN_ID}", "payment-response"),
        ("fetch-v2", 1, "base", "x-payment-response"),
        ("x402-fetch", 1, "base", "x-payment-response"),
    ],
)
async def test_official_client_pays_the_route_once(
    world: World, pool: db.Pool, client: x402_ts.Client, version: int, network: str, header: str
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url:
        result = await x402_ts.pay(
            url + ROUTE,
            client=client,
            family="evm",
            key="0x" + world.payer.key.hex().removeprefix("0x"),
            rpc=world.node.url,
            version=version,
        )
    assert result.status == 200, result.body
    assert result.json["result"] == "paid content"
    assert header in result.headers
    settled = result.payment_response
    assert settled is not None and settled["success"] is True, settled
    assert settled["network"] == network
    assert settled["payer"].lower() == world.payer.address.lower()
    assert await world.token.balance_of(world.receiver) == PRICE  # paid once
    (auth,) = await authorizations(pool)
    assert (auth["status"], auth["x402_version"]) == ("settled", version)
    assert auth["tx_hash"] == settled["transaction"]


@pytest.mark.parametrize("client", ["fetch-v2", "x402-fetch"])
async def test_a_price_over_the_clients_cap_is_not_paid(
    world: World, pool: db.Pool, client: x402_ts.Client
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url:
        with pytest.raises(x402_ts.ClientError):
            await x402_ts.pay(
                url + ROUTE,
                client=client,
                family="evm",
                key="0x" + world.payer.key.hex().removeprefix("0x"),
                rpc=world.node.url,
                version=1 if client == "x402-fetch" else 2,
                max_units=PRICE - 1,
            )
    assert await world.token.balance_of(world.receiver) == 0
    assert await authorizations(pool) == []
