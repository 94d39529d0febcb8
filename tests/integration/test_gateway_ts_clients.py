"""The official TypeScript x402 clients pay a gateway route its own price (0.30, three
calls' worth) in reverse-proxy mode on anvil, v1 and v2; the upstream gets the call
once, signed, with the payer's address and never the payment itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.app import create_app
from devkit import upstream as upstream_kit
from devkit import x402_ts
from devkit.anvil import Anvil, start_anvil
from devkit.api_support import serve
from devkit.x402kit import BASE_CHAIN_ID, PRICE, World, make_world
from watcher import db, gateway_config
from watcher.settings import Settings

SECRET = b"ts-clients-gateway-secret-0123456789"
ROUTE_FILE = """
[upstreams.api]
url = "{url}"
secret = {{ env = "TS_GATEWAY_SECRET" }}

[[routes]]
method = "GET"
path = "/v1/report/{{id}}"
upstream = "api"
upstream_path = "/echo/{{id}}"
price_usd = "0.30"
"""


def gateway(tmp_path: Path, upstream_url: str, settings: Settings) -> gateway_config.GatewayConfig:
    """One route at 0.30 (three calls' worth) in front of ``upstream_url``."""
    path = tmp_path / "gateway.toml"
    path.write_text(ROUTE_FILE.format(url=upstream_url))
    return gateway_config.load(path, settings, {"TS_GATEWAY_SECRET": SECRET.decode()})


@pytest.fixture
async def base_anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield node
    finally:
        await node.close()


@pytest.mark.parametrize(
    ("client", "version"), [("fetch-v2", 2), ("fetch-v2", 1), ("x402-fetch", 1)]
)
async def test_official_client_pays_a_gateway_route_its_price(
    base_anvil: Anvil, pool: db.Pool, tmp_path: Path, client: x402_ts.Client, version: int
) -> None:
    world: World = await make_world(base_anvil)
    async with upstream_kit.upstream(SECRET) as up:
        app = create_app(world.settings, pool, gateway=gateway(tmp_path, up.url, world.settings))
        async with serve(app) as url:
            result = await x402_ts.pay(
                url + "/v1/report/42",
                client=client,
                family="evm",
                key="0x" + world.payer.key.hex().removeprefix("0x"),
                rpc=world.node.url,
                version=version,
                max_units=3 * PRICE,
            )
        assert result.status == 200, result.body
        settled = result.payment_response
        assert settled is not None and settled["success"] is True, settled
        assert settled["amount"] == str(3 * PRICE)
        seen = {k.lower(): v for k, v in result.json["headers"].items()}
        assert seen["x-payment-rail"] == "x402"
        assert seen["x-payment-payer"].lower() == world.payer.address.lower()
        assert not {"payment-signature", "x-payment"} & set(seen)
        assert up.accepted == 1 and up.refused == []
    assert await world.token.balance_of(world.receiver) == 3 * PRICE  # paid once, in full
