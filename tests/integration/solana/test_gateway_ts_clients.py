"""The official TypeScript x402 clients pay a gateway route its own price on the local
LiteSVM node (Solana `exact`, us as fee payer), v1 and v2, in reverse-proxy mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from devkit import upstream as upstream_kit
from devkit import x402_ts
from devkit.api_support import serve
from devkit.solana_node import World as NodeWorld
from devkit.x402svmkit import PRICE, World, make_world
from tests.integration.test_gateway_ts_clients import SECRET, gateway
from watcher import db


@pytest.fixture
def x402(world: NodeWorld) -> World:
    return make_world(world)


@pytest.mark.parametrize(
    ("client", "version"), [("fetch-v2", 2), ("fetch-v2", 1), ("x402-fetch", 1)]
)
async def test_official_client_pays_a_gateway_route_its_price_on_solana(
    x402: World, pool: db.Pool, tmp_path: Path, client: x402_ts.Client, version: int
) -> None:
    async with upstream_kit.upstream(SECRET) as up:
        app = create_app(x402.settings, pool, gateway=gateway(tmp_path, up.url, x402.settings))
        async with serve(app) as url:
            result = await x402_ts.pay(
                url + "/v1/report/7",
                client=client,
                family="svm",
                key=str(x402.alice),
                rpc=x402.node.node.url,
                version=version,
                max_units=3 * PRICE,
            )
        assert result.status == 200, result.body
        settled = result.payment_response
        assert settled is not None and settled["success"] is True, settled
        seen = {k.lower(): v for k, v in result.json["headers"].items()}
        assert (seen["x-payment-rail"], seen["x-payment-payer"]) == (
            "x402",
            str(x402.alice.pubkey()),
        )
        assert up.accepted == 1
    assert x402.balance(x402.owner) == 3 * PRICE
