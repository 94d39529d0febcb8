"""A server that takes payments on no network (or on one only) offers only what it takes."""

from __future__ import annotations

from api.x402 import offers
from devkit.api_support import app_for, client
from watcher import db

PAID = "/x402/example/paid"
NO_NETWORK = {
    "x402_base_payment_address": None,
    "x402_ethereum_payment_address": None,
    "x402_solana_payment_address": None,
}


async def test_with_no_network_the_402_offers_none_and_says_so(pool: db.Pool) -> None:
    async with client(app_for(pool, **NO_NETWORK)) as http:
        refused = await http.get(PAID)
        assert refused.status_code == 402
        body = refused.json()
        assert body["accepts"] == [] and "invoice" not in body
        assert body["ways_to_pay"] == []  # no token to buy, no Stripe here
        assert body["fix"].startswith("this server has no network to pay USDC on")
        assert "nothing can be bought here yet" in body["fix"]
        assert offers.PAYMENT_REQUIRED not in refused.headers
        invoice = await http.post("/x402/invoices", json={"chain": "base", "requests": 10})
        assert invoice.status_code == 400 and invoice.json()["error"] == "chain_not_accepted"
        assert invoice.json()["fix"].startswith("this server takes payments on no network yet")
        assert invoice.json()["accepted_chains"] == []


async def test_with_one_network_the_402_suggests_and_names_only_it(pool: db.Pool) -> None:
    only_solana = {k: v for k, v in NO_NETWORK.items() if "solana" not in k}
    async with client(app_for(pool, **only_solana)) as http:
        body = (await http.get(PAID)).json()
        assert body["invoice"]["body"]["chain"] == "solana"
        assert {a["network"] for a in body["accepts"]} == {"solana"}
        (way,) = [w for w in body["ways_to_pay"] if w["method"] == "x402"]
        assert way["how"].startswith("pay USDC on solana (see accepts)")
        made = await http.post("/x402/invoices", json=body["invoice"]["body"])
        assert made.status_code == 201, made.text


async def test_the_suggested_invoice_meets_the_invoice_minimum(pool: db.Pool) -> None:
    # A $5 minimum at $0.10 a call: ten calls ($1) would be refused as amount_too_small.
    async with client(app_for(pool, x402_min_payment_usd="5.05")) as http:
        body = (await http.get(PAID)).json()
        assert body["invoice"]["body"]["requests"] == 51
        made = await http.post("/x402/invoices", json=body["invoice"]["body"])
        assert made.status_code == 201, made.text
    async with client(app_for(pool)) as http:  # the default minimum: ten calls, as before
        assert (await http.get(PAID)).json()["invoice"]["body"]["requests"] == 10
