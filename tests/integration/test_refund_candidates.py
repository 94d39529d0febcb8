"""Refund candidates through the admin API: an over-payment above the minimum, not an EVM
invoice's own jitter; a second payment for one invoice; an expired invoice's payment left
unclaimed past the claim window."""

from __future__ import annotations

from solders.keypair import Keypair

from devkit.api_support import SOLANA_MINT, SOLANA_OWNER, app_for, client, record_payment
from devkit.refundkit import HEADERS
from watcher import db


def sig() -> str:
    return str(Keypair().sign_message(b"tx"))


async def test_candidates_say_why_and_how_much(pool: db.Pool) -> None:
    sol = {"chain": "solana", "to_address": SOLANA_OWNER, "token": SOLANA_MINT}
    async with client(app_for(pool)) as http:
        evm_inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 3})).json()
        amount = int(evm_inv["amount"])
        assert 300_000 < amount < 310_000  # the jitter: part of the amount
        exact, _ = await record_payment(pool, amount=amount, tx_hash="0x" + "a1" * 32)
        second, _ = await record_payment(pool, amount=amount, tx_hash="0x" + "a2" * 32)
        small = (await http.post("/x402/invoices", json={"chain": "solana", "requests": 5})).json()
        over, _ = await record_payment(
            pool, **sol, tx_hash=sig(), amount=500_000 + 50_000, reference_keys=[small["reference"]]
        )
        big = (await http.post("/x402/invoices", json={"chain": "solana", "requests": 5})).json()
        much, _ = await record_payment(
            pool, **sol, tx_hash=sig(), amount=900_000, reference_keys=[big["reference"]]
        )
        late = (await http.post("/x402/invoices", json={"chain": "solana", "requests": 2})).json()
        stale, _ = await record_payment(
            pool, **sol, tx_hash=sig(), amount=200_000, reference_keys=[late["reference"]]
        )
        # time passes: the invoice expired and its payment waited longer than the window
        await pool.execute(
            "UPDATE invoices SET created_at = now() - interval '9 days', "
            "expires_at = now() - interval '8 days' WHERE id = $1",
            late["invoice_id"],
        )
        await pool.execute(
            "UPDATE payments SET credited_at = now() - interval '8 days' WHERE id = $1", stale
        )
        got = await http.get("/x402/admin/refunds/candidates", headers=HEADERS)
    assert got.status_code == 200, got.text
    found = {(c["payment_id"], c["why"]): c for c in got.json()["candidates"]}
    assert (second, "second_payment") in found
    assert found[(second, "second_payment")]["refundable"] == str(amount)
    assert (much, "over_payment") in found and found[(much, "over_payment")]["kind"] == "excess"
    assert found[(much, "over_payment")]["refundable"] == "400000"
    assert (stale, "expired_unclaimed") in found
    listed = {pid for pid, _ in found}
    assert exact not in listed  # the invoice's own jitter is its amount
    assert over not in listed  # $0.05 over: below X402_REFUND_MIN_USD
