"""A route's price is its price on every rail: a route declared ``paid(5)`` asks five calls'
price of a standard x402 client (v1 body and v2 header), settles only that amount on anvil,
and charges five calls to a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI

from api import paywall
from api.app import create_app
from devkit.anvil import Anvil, start_anvil
from devkit.api_support import app_for, buy_token, serve
from devkit.x402kit import (
    BASE_CHAIN_ID,
    PRICE,
    ROUTE,
    World,
    decode_header,
    make_world,
    v1_header,
    v2_header,
)
from watcher import db

COST = 5
ROUTE5 = "/x402/example/paid5"
Paid5 = Annotated[paywall.Charge, paywall.paid(COST)]


def with_paid5(app: FastAPI) -> list[str]:
    """Register a test route costing five calls; returns the list of its runs."""
    runs: list[str] = []

    @app.get(ROUTE5)
    async def paid5(charge: Paid5) -> dict[str, Any]:
        runs.append(charge.via)
        return {"result": "five calls' worth", "remaining": charge.remaining}

    return runs


@pytest.fixture
async def world() -> AsyncIterator[World]:
    node: Anvil = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield await make_world(node)
    finally:
        await node.close()


async def balances(world: World) -> tuple[int, int]:
    return (
        await world.token.balance_of(world.payer.address.lower()),
        await world.token.balance_of(world.receiver),
    )


async def test_the_402_offers_the_routes_price_in_v1_and_v2(world: World, pool: db.Pool) -> None:
    app = create_app(world.settings, pool)
    with_paid5(app)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        five, one = await http.get(ROUTE5), await http.get(ROUTE)
    for resp, cost in ((five, COST), (one, 1)):
        assert resp.status_code == 402
        (v1,) = [a for a in resp.json()["accepts"] if a["network"] == "base"]
        assert v1["maxAmountRequired"] == str(cost * PRICE)
        (v2,) = decode_header(resp.headers["PAYMENT-REQUIRED"])["accepts"]
        assert v2["amount"] == str(cost * PRICE)


async def test_a_one_call_payment_to_a_cost_5_route_is_refused(world: World, pool: db.Pool) -> None:
    app = create_app(world.settings, pool)
    runs = with_paid5(app)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        one_call_v2 = await v2_header(http, world)  # signed for the one-call route
        one_call_v1 = await v1_header(http, world)
        # Signed for one call while claiming to accept the five-call offer.
        lying = await v2_header(
            http, world, route=ROUTE5, cap_units=COST * PRICE, amount=str(PRICE)
        )
        answers = [await http.get(ROUTE5, headers=h) for h in (one_call_v2, one_call_v1, lying)]
    assert [a.status_code for a in answers] == [402, 402, 402]
    assert [a.json()["error"] for a in answers] == [
        "invalid_payment_requirements",
        "invalid_exact_evm_payload_authorization_value_mismatch",
        "invalid_exact_evm_payload_authorization_value_mismatch",
    ]
    assert runs == []
    assert await balances(world) == (10 * PRICE, 0)
    assert await pool.fetchval("SELECT count(*) FROM x402_authorizations") == 0


async def test_a_five_call_payment_is_served_once(world: World, pool: db.Pool) -> None:
    app = create_app(world.settings, pool)
    runs = with_paid5(app)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        v2 = await v2_header(http, world, route=ROUTE5, cap_units=COST * PRICE)
        paid = await http.get(ROUTE5, headers=v2)
        again = await http.get(ROUTE5, headers=v2)
        v1 = await v1_header(http, world, route=ROUTE5, cap_units=COST * PRICE)
        paid_v1 = await http.get(ROUTE5, headers=v1)
    assert paid.status_code == 200, paid.text
    assert decode_header(paid.headers["PAYMENT-RESPONSE"])["amount"] == str(COST * PRICE)
    assert again.status_code == 402
    assert again.json()["error"] == "invalid_exact_evm_nonce_already_used"
    assert paid_v1.status_code == 200, paid_v1.text
    assert runs == ["x402-exact", "x402-exact"]
    assert await balances(world) == (0, 2 * COST * PRICE)
    values = await pool.fetch("SELECT amount, status FROM x402_authorizations ORDER BY id")
    assert [(int(r["amount"]), r["status"]) for r in values] == [(COST * PRICE, "settled")] * 2


async def test_a_token_pays_the_routes_cost(pool: db.Pool) -> None:
    app = app_for(pool)
    runs = with_paid5(app)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        token = (await buy_token(http, pool))["token"]  # 10 calls
        headers = {"x-payment-token": token}
        served = [await http.get(ROUTE5, headers=headers) for _ in range(3)]
    assert [r.status_code for r in served] == [200, 200, 402]
    assert [r.json().get("remaining") for r in served[:2]] == [5, 0]
    assert served[2].json()["error"] == "token_exhausted"
    assert runs == ["x402", "x402"]
