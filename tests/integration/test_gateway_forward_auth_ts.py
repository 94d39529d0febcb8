"""Forward-auth mode with the official TypeScript x402 clients: each pays a 3-call route
its price through the real nginx, Caddy and Traefik recipes of docs/gateway.md on anvil,
once, and the upstream sees the payer, never the payment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit import x402_ts
from devkit.anvil import Anvil, start_anvil
from devkit.x402kit import BASE_CHAIN_ID, PRICE, make_world
from tests.integration.test_gateway_forward_auth import BASE_VALUES, PROXIES, stack
from watcher import db


@pytest.fixture
async def node() -> AsyncIterator[Anvil]:
    n = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield n
    finally:
        await n.close()


@pytest.mark.parametrize("kind", PROXIES)
@pytest.mark.parametrize(("client", "version"), [("fetch-v2", 2), ("x402-fetch", 1)])
async def test_official_client_pays_through_the_proxys_forward_auth(
    kind: str, client: x402_ts.Client, version: int, node: Anvil, pool: db.Pool, tmp_path: Path
) -> None:
    world = await make_world(node, **BASE_VALUES)
    async with stack(kind, pool, tmp_path, world.settings) as s:
        result = await x402_ts.pay(
            f"{s.http.base_url}/echo/x402",
            client=client,
            family="evm",
            key="0x" + world.payer.key.hex().removeprefix("0x"),
            rpc=world.node.url,
            version=version,
            max_units=3 * PRICE,
        )
        assert result.status == 200, result.body
        seen = {k.lower(): v for k, v in result.json["headers"].items()}
        assert seen["x-payment-rail"] == "x402"
        assert seen["x-payment-payer"].lower() == world.payer.address.lower()
        assert not {"payment-signature", "x-payment"} & set(seen)
        assert s.up.accepted == 1
    assert await world.token.balance_of(world.receiver) == 3 * PRICE  # paid once, in full
