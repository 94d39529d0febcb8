"""The official TypeScript x402 clients pay our paid route on the local LiteSVM node.

Run by Node from the test (devkit/x402_ts.py): ``@x402/fetch`` with ``@x402/svm`` pays the
v2 header and, when the server offers only the v1 body, the v1 way; the older
``x402-fetch`` speaks v1 only and estimates compute units by simulating an unsigned
transaction (``sigVerify: false``, ``replaceRecentBlockhash: true``), which the node
honours. Each settles once with us as fee payer, answers 200 with a successful
PAYMENT-RESPONSE and leaves one settled row."""

from __future__ import annotations

from typing import Any

import pytest

from api.app import create_app
from devkit import x402_ts
from devkit.api_support import serve
from devkit.solana_node import World as NodeWorld
from devkit.x402svmkit import NETWORK, PRICE, ROUTE, World, make_world
from watcher import db


@pytest.fixture
def x402(world: NodeWorld) -> World:
    return make_world(world)


async def settlements(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM x402_solana_settlements ORDER BY id")
        return [dict(r) for r in rows]


@pytest.mark.parametrize(
    ("client", "version", "network", "header"),
    [
        ("fetch-v2", 2, NETWORK, "payment-response"),
        ("fetch-v2", 1, "solana-devnet", "x-payment-response"),
        ("x402-fetch", 1, "solana-devnet", "x-payment-response"),
    ],
)
async def test_official_client_pays_the_route_once(
    x402: World, pool: db.Pool, client: x402_ts.Client, version: int, network: str, header: str
) -> None:
    app = create_app(x402.settings, pool)
    async with serve(app) as url:
        result = await x402_ts.pay(
            url + ROUTE,
            client=client,
            family="svm",
            key=str(x402.alice),
            rpc=x402.node.node.url,
            version=version,
        )
    assert result.status == 200, result.body
    assert result.json["result"] == "paid content"
    assert header in result.headers
    settled = result.payment_response
    assert settled is not None and settled["success"] is True, settled
    assert settled["network"] == network
    assert settled["payer"] == str(x402.alice.pubkey())
    assert x402.balance(x402.owner) == PRICE  # paid once
    landed = x402.node.node.chain.by_sig[settled["transaction"]]
    assert landed.err is None
    (row,) = await settlements(pool)
    assert (row["status"], row["x402_version"]) == ("settled", version)
    assert (row["signature"], row["payer"]) == (settled["transaction"], str(x402.alice.pubkey()))
