"""Amounts the API shows: base units as plain integers, dollars by the one rule (watcher.money)."""

from __future__ import annotations

from eth_account import Account

from devkit.api_support import app_for, client, record_payment
from watcher import db


async def test_verify_payment_shows_a_million_units_as_a_plain_integer(pool: db.Pool) -> None:
    payer = Account.create()
    _, tx = await record_payment(pool, from_address=payer.address.lower(), amount=1_000_000)
    async with client(app_for(pool)) as http:
        found = await http.post("/x402/verify-payment", json={"chain": "base", "tx_hash": tx})
    assert found.status_code == 200, found.text
    (payment,) = found.json()["payments"]
    assert payment["amount"] == "1000000"  # was "1.00E+6": str() of the numeric's Decimal
    assert payment["requests"] == 10


async def test_prices_and_invoices_show_dollars_with_two_to_six_decimals(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        pricing = (await http.get("/x402/pricing")).json()
        assert (pricing["price_per_call_usd"], pricing["minimum_payment_usd"]) == ("0.10", "0.10")
        made = await http.post("/x402/invoices", json={"chain": "solana", "amount_usd": "2.35"})
        assert made.status_code == 201, made.text
        invoice = made.json()
        assert (invoice["amount"], invoice["amount_usd"]) == ("2300000", "2.30")  # whole calls
