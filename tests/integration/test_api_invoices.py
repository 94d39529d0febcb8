"""Invoices: unique amounts on EVM, reference keys on Solana, matched by the credit itself."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

from eth_account import Account
from solders.keypair import Keypair

from devkit import evmkit
from devkit.anvil import Anvil, Token
from devkit.api_support import (
    SOLANA_MINT,
    SOLANA_OWNER,
    app_for,
    client,
    follow_receipt,
    fresh_rate_window,
    record_payment,
)
from watcher import db, ledger

PAID = "/x402/example/paid"


async def test_invoice_end_to_end_with_the_evm_follower(
    pool: db.Pool, anvil: Anvil, usdc: Token
) -> None:
    receiver = anvil.accounts[9]
    app = app_for(
        pool,
        x402_base_payment_address=receiver,
        x402_base_usdc_address=usdc.address,
        x402_base_chain_id=anvil.chain_id,
        x402_base_confirmations=3,
    )
    chain = evmkit.evm_chain(anvil, usdc, [receiver], confirmations=3)
    async with client(app) as http, evmkit.follower(chain, pool) as follower:
        created = await http.post("/x402/invoices", json={"chain": "base", "requests": 3})
        assert created.status_code == 201, created.text
        inv = created.json()
        amount = int(inv["amount"])
        assert 300_000 < amount < 400_000 and inv["requests"] == 3
        assert inv["pay_to"].lower() == receiver and inv["asset"].lower() == usdc.address
        url = f"/x402/invoices/{inv['invoice_id']}"
        assert (await http.get(url)).json()["status"] == "open"

        receipt = await usdc.transfer(anvil.accounts[1], receiver, amount)
        await evmkit.drain(follower)
        status = (await http.get(url)).json()
        assert status["status"] == "paid"
        assert status["payment"]["confirmations"] == {"have": 1, "need": 3}

        await anvil.mine(2)
        await evmkit.drain(follower)  # depth 3: the follower credits, the invoice follows
        status = (await http.get(url)).json()
        assert status["status"] == "credited"
        assert status["payment"]["tx_hash"] == receipt["transactionHash"].lower()

        wrong = await http.post(
            "/x402/generate-token", json={"invoice_id": inv["invoice_id"], "claim_secret": "guess"}
        )
        assert wrong.status_code == 403
        claim = {"invoice_id": inv["invoice_id"], "claim_secret": inv["claim_secret"]}
        got = await http.post("/x402/generate-token", json=claim)
        assert got.status_code == 201, got.text
        token = got.json()["token"]
        assert got.json()["requests"] == 3
        for left in (2, 1, 0):
            call = await http.get(PAID, headers={"x-payment-token": token})
            assert call.status_code == 200 and call.json()["remaining"] == left
        exhausted = await http.get(PAID, headers={"x-payment-token": token})
        assert exhausted.status_code == 402 and exhausted.json()["error"] == "token_exhausted"
        status = (await http.get(url)).json()
        assert status["status"] == "claimed" and status["token_id"] == got.json()["token_id"]
        replay = await http.post("/x402/generate-token", json=claim)
        assert replay.status_code == 409 and replay.json()["token_id"] == got.json()["token_id"]


async def test_invoice_follows_a_credit_written_from_an_anvil_receipt(
    pool: db.Pool, anvil: Anvil, usdc: Token
) -> None:
    """The same matching without the follower: record + credit as any follower would."""
    receiver = anvil.accounts[8]
    app = app_for(pool, x402_base_payment_address=receiver, x402_base_usdc_address=usdc.address)
    async with client(app) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 2})).json()
        receipt = await usdc.transfer(anvil.accounts[2], receiver, int(inv["amount"]))
        ids = await follow_receipt(pool, receipt, "base", usdc.address, receiver, credit=False)
        seen = (await http.get(f"/x402/invoices/{inv['invoice_id']}")).json()
        assert seen["status"] == "paid"  # observed; no follower cursor, so 0 of 6 confirmations
        assert seen["payment"]["confirmations"] == {"have": 0, "need": 6}
        async with pool.acquire() as conn, conn.transaction():
            await ledger.credit(conn, ids)
        status = (await http.get(f"/x402/invoices/{inv['invoice_id']}")).json()
        assert status["status"] == "credited" and status["requests"] == 2


async def test_open_evm_invoice_amounts_are_unique(pool: db.Pool) -> None:
    await fresh_rate_window()
    app = app_for(pool)
    payers = [client(app, host=f"10.0.0.{i}") for i in range(10)]  # 10 invoices/min each
    body = {"chain": "base", "requests": 10}
    try:
        made = await asyncio.gather(
            *(http.post("/x402/invoices", json=body) for http in payers for _ in range(3))
        )
        assert all(r.status_code == 201 for r in made)
        amounts = [int(r.json()["amount"]) for r in made]
        assert len(set(amounts)) == 30
        assert all(1_000_000 < a < 1_010_000 for a in amounts)
        by_usd = await payers[0].post(
            "/x402/invoices", json={"chain": "ethereum", "amount_usd": "2.35"}
        )
        assert by_usd.status_code == 201 and by_usd.json()["requests"] == 23
        for _ in range(6):
            await payers[0].post("/x402/invoices", json=body)
        limited = await payers[0].post("/x402/invoices", json=body)
        assert limited.status_code == 429 and "Retry-After" in limited.headers
    finally:
        for http in payers:
            await http.aclose()


async def test_solana_invoice_matches_by_reference_not_by_dust(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "solana", "requests": 5})).json()
        assert inv["amount"] == "500000"
        url = urlsplit(inv["solana_pay_url"])
        assert url.scheme == "solana" and url.path == SOLANA_OWNER
        query = parse_qs(url.query)
        assert query["amount"] == ["0.5"] and query["spl-token"] == [SOLANA_MINT]
        assert query["reference"] == [inv["reference"]]

        def sig() -> str:
            return str(Keypair().sign_message(b"tx"))

        common = {"chain": "solana", "to_address": SOLANA_OWNER, "token": SOLANA_MINT}
        await record_payment(
            pool, **common, tx_hash=sig(), amount=1, reference_keys=[inv["reference"]]
        )
        status = (await http.get(f"/x402/invoices/{inv['invoice_id']}")).json()
        assert status["status"] == "open"  # dust carrying the public reference takes nothing
        pid, _ = await record_payment(
            pool, **common, tx_hash=sig(), amount=700_000, reference_keys=[inv["reference"]]
        )
        status = (await http.get(f"/x402/invoices/{inv['invoice_id']}")).json()
        assert status["status"] == "credited" and status["payment"]["payment_id"] == pid
        assert status["requests"] == 7  # over-payment: credited pro rata
        claim = {"invoice_id": inv["invoice_id"], "claim_secret": inv["claim_secret"]}
        got = await http.post("/x402/generate-token", json=claim)
        assert got.status_code == 201 and got.json()["requests"] == 7


async def test_late_payment_within_grace_counts_and_after_it_does_not(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        late = (await http.post("/x402/invoices", json={"chain": "base", "requests": 2})).json()
        too_late = (await http.post("/x402/invoices", json={"chain": "base", "requests": 4})).json()
        await pool.execute(
            "UPDATE invoices SET created_at = now() - interval '2 hours',"
            " expires_at = now() - interval '30 minutes' WHERE id = $1",
            late["invoice_id"],
        )
        await pool.execute(
            "UPDATE invoices SET created_at = now() - interval '3 hours',"
            " expires_at = now() - interval '2 hours' WHERE id = $1",
            too_late["invoice_id"],
        )
        expired = (await http.get(f"/x402/invoices/{late['invoice_id']}")).json()
        assert expired["status"] == "expired"
        payer = Account.create().address.lower()
        await record_payment(pool, from_address=payer, amount=int(late["amount"]))
        await record_payment(pool, from_address=payer, amount=int(too_late["amount"]), log_index=1)
        got = (await http.get(f"/x402/invoices/{late['invoice_id']}")).json()
        assert got["status"] == "credited"
        missed = (await http.get(f"/x402/invoices/{too_late['invoice_id']}")).json()
        assert missed["status"] == "expired"


async def test_invoice_input_errors_are_4xx(pool: db.Pool) -> None:
    async with client(app_for(pool, x402_ethereum_payment_address="")) as http:
        off = await http.post("/x402/invoices", json={"chain": "ethereum", "requests": 1})
        assert off.status_code == 400 and off.json()["error"] == "chain_not_accepted"
        both = await http.post(
            "/x402/invoices", json={"chain": "base", "requests": 1, "amount_usd": "1"}
        )
        assert both.status_code == 422 and both.json()["error"] == "invalid_request"
        tiny = await http.post("/x402/invoices", json={"chain": "base", "amount_usd": "0.05"})
        assert tiny.status_code == 422 and tiny.json()["error"] == "amount_too_small"
        unknown = await http.get("/x402/invoices/00000000-0000-0000-0000-000000000000")
        assert unknown.status_code == 404
        bad_id = await http.get("/x402/invoices/not-a-uuid")
        assert bad_id.status_code == 422
