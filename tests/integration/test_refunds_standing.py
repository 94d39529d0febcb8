"""A refund is signed only while its payment still holds money of ours: one requested,
then its payment's block reorged out (flagged) or the payment invalidated by an
operator, is not sent; nor one to an address of ours (anvil, the real sender, the API)."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct

from api.app import create_app
from devkit import refundkit
from devkit.anvil import Anvil, Token
from devkit.api_support import client
from devkit.refundkit import HEADERS
from watcher import db, ledger
from watcher.refunds import proof, worker


async def request(w: refundkit.World, pool: db.Pool, pid: int) -> int:
    async with client(create_app(w.settings(), pool)) as http:
        made = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={"payment_id": pid, "reason": "customer asked"},
        )
    assert made.status_code == 200, made.text
    return int(made.json()["id"])


async def test_a_refund_whose_payment_was_reorged_out_meanwhile_is_not_sent(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 2_000_000)
    rid = await request(w, pool, pid)
    async with pool.acquire() as conn, conn.transaction():
        assert await ledger.flag_reorged_credits(conn, [pid], "block reorged out")
    before = await usdc.balance_of(w.payer)
    assert await worker.run_pass(w.settings(), pool) == {"base": 0}
    row = await pool.fetchrow("SELECT status, last_error, nonce FROM refunds WHERE id = $1", rid)
    # kept requested (the payment may re-land and be confirmed again), and said why
    assert row["status"] == "requested" and row["nonce"] is None
    assert "reorged" in row["last_error"]
    assert await usdc.balance_of(w.payer) == before


async def test_a_refund_whose_payment_was_invalidated_meanwhile_fails_unsent(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 2_000_000)
    rid = await request(w, pool, pid)
    async with client(create_app(w.settings(), pool)) as http:
        marked = await http.post(
            f"/x402/admin/payments/{pid}/mark",
            headers=HEADERS,
            json={"action": "invalidate", "reason": "not a payment of ours"},
        )
    assert marked.status_code == 200, marked.text
    before = await usdc.balance_of(w.payer)
    assert await worker.run_pass(w.settings(), pool) == {"base": 1}
    row = await pool.fetchrow("SELECT status, failure, nonce FROM refunds WHERE id = $1", rid)
    assert row["status"] == "failed" and row["nonce"] is None
    assert "not_ours" in row["failure"]
    assert await usdc.balance_of(w.payer) == before


async def test_a_refund_whose_payment_was_reorged_out_meanwhile_is_not_exported(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_500_000)
    settings = w.settings(key=False)
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "asked"}
        )
        rid = int(made.json()["id"])
        async with pool.acquire() as conn, conn.transaction():
            assert await ledger.flag_reorged_credits(conn, [pid], "block reorged out")
        got = await http.get(f"/x402/admin/refunds/{rid}/export?format=safe", headers=HEADERS)
    assert got.status_code == 409 and got.json()["error"] == "payment_not_refundable"
    assert await refundkit.status(pool, rid) == "requested"


async def test_a_refund_to_one_of_our_own_addresses_is_refused(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    payer = Account.create()
    await anvil.rpc("anvil_setBalance", payer.address, hex(10**18))
    await usdc.mint(payer.address.lower(), 5_000_000)
    await anvil.rpc("anvil_impersonateAccount", payer.address)
    pid = await refundkit.pay(w, pool, 1_000_000, sender=payer.address.lower())
    row = await pool.fetchrow("SELECT tx_hash, log_index FROM payments WHERE id = $1", pid)
    answers = []
    async with client(create_app(w.settings(), pool)) as http:
        for ours in (w.receiver, w.wallet_address):
            text = proof.message("base", row["tx_hash"], row["log_index"], ours, 1_000_000)
            signed = Account.sign_message(encode_defunct(text=text), payer.key).signature.hex()
            body = {"payment_id": pid, "reason": "to you", "destination": ours}
            answers.append(
                await http.post(
                    "/x402/admin/refunds",
                    headers=HEADERS,
                    json={**body, "amount": 1_000_000, "signature": "0x" + signed},
                )
            )
    for got in answers:
        assert got.status_code == 409, got.text
        assert got.json()["error"] == "destination_is_ours"
    assert await pool.fetchval("SELECT count(*) FROM refunds") == 0
