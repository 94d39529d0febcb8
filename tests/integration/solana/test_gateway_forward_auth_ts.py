"""Forward-auth mode on Solana with the official TypeScript x402 clients: each pays a
3-call route its price through the docs' nginx recipe on the LiteSVM node, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import x402_ts
from devkit.solana_node import World as NodeWorld
from devkit.x402svmkit import PRICE, World, make_world
from tests.integration.test_gateway_forward_auth import BASE_VALUES, stack
from watcher import db


@pytest.fixture
def x402(world: NodeWorld) -> World:
    return make_world(world)


@pytest.mark.parametrize(("client", "version"), [("fetch-v2", 2), ("x402-fetch", 1)])
async def test_official_client_pays_through_nginx_forward_auth_on_solana(
    x402: World, pool: db.Pool, tmp_path: Path, client: x402_ts.Client, version: int
) -> None:
    # The gateway file's tiers must be on sale: the same settings plus Stripe's, validated.
    settings = type(x402.settings).model_validate({**x402.settings.model_dump(), **BASE_VALUES})
    async with stack("nginx", pool, tmp_path, settings) as s:
        result = await x402_ts.pay(
            f"{s.http.base_url}/echo/x402",
            client=client,
            family="svm",
            key=str(x402.alice),
            rpc=x402.node.node.url,
            version=version,
            max_units=3 * PRICE,
        )
        assert result.status == 200, result.body
        seen = {k.lower(): v for k, v in result.json["headers"].items()}
        payer = str(x402.alice.pubkey())
        assert (seen["x-payment-rail"], seen["x-payment-payer"]) == ("x402", payer)
        assert s.up.accepted == 1
    assert x402.balance(x402.owner) == 3 * PRICE
