"""A route's price on Solana `exact`: a route declared ``paid(5)`` offers five calls' price,
refuses a one-call transfer and serves a five-call one once, on the LiteSVM node."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from x402.mechanisms.svm import constants as svm

from api import paywall
from api.app import create_app
from devkit.api_support import serve
from devkit.solana_node import World as NodeWorld
from devkit.x402svmkit import (
    NETWORK,
    PRICE,
    World,
    client_v1_header,
    client_v2_header,
    decode_header,
    make_world,
    payment_tx,
    solana_offer,
    v2_header_for,
)
from watcher import db

COST = 5
ROUTE5 = "/x402/example/paid5"
Paid5 = Annotated[paywall.Charge, paywall.paid(COST)]


@pytest.fixture
def x402(world: NodeWorld) -> World:
    return make_world(world)


def with_paid5(app: FastAPI) -> list[str]:
    runs: list[str] = []

    @app.get(ROUTE5)
    async def paid5(charge: Paid5) -> dict[str, Any]:
        runs.append(charge.via)
        return {"result": "five calls' worth"}

    return runs


async def test_a_one_call_payment_to_a_cost_5_route_is_refused(x402: World, pool: db.Pool) -> None:
    app = create_app(x402.settings, pool)
    runs = with_paid5(app)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http, ROUTE5)
        assert offer["network"] == NETWORK and offer["amount"] == str(COST * PRICE)
        v1 = next(
            a for a in (await http.get(ROUTE5)).json()["accepts"] if a["network"] == "solana-devnet"
        )
        assert v1["maxAmountRequired"] == str(COST * PRICE)
        one_call_v2 = await client_v2_header(http, x402)  # paid the one-call route's 402
        one_call_v1 = await client_v1_header(http, x402)
        short = v2_header_for(offer, payment_tx(x402, amount=PRICE))  # claims the 5-call offer
        answers = [await http.get(ROUTE5, headers=h) for h in (one_call_v2, one_call_v1, short)]
    assert [a.status_code for a in answers] == [402, 402, 402]
    assert [a.json()["error"] for a in answers] == [
        "invalid_payment_requirements",
        svm.ERR_AMOUNT_INSUFFICIENT,
        svm.ERR_AMOUNT_INSUFFICIENT,
    ]
    assert runs == [] and x402.balance(x402.owner) == 0
    assert await pool.fetchval("SELECT count(*) FROM x402_solana_settlements") == 0


async def test_a_five_call_payment_is_served_once(x402: World, pool: db.Pool) -> None:
    app = create_app(x402.settings, pool)
    runs = with_paid5(app)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await client_v2_header(http, x402, route=ROUTE5, cap_units=COST * PRICE)
        paid = await http.get(ROUTE5, headers=header)
        again = await http.get(ROUTE5, headers=header)
    assert paid.status_code == 200, paid.text
    assert decode_header(paid.headers["PAYMENT-RESPONSE"])["amount"] == str(COST * PRICE)
    assert again.status_code == 402 and again.json()["error"] == "duplicate_settlement"
    assert runs == ["x402-exact-solana"]
    assert x402.balance(x402.owner) == COST * PRICE
    amounts = await pool.fetch("SELECT amount, status FROM x402_solana_settlements")
    assert [(int(r["amount"]), r["status"]) for r in amounts] == [(COST * PRICE, "settled")]
