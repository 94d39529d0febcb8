"""Refunds on anvil with the real follower and API: sent by our key and confirmed by the
follower; the unconsumed part of a token; a repeated refund key; proofs; a contract
source refused (docs/holds-and-refunds.md "Refunds")."""

from __future__ import annotations

import secrets
from datetime import timedelta

from eth_account import Account
from eth_account.messages import encode_defunct

from api.app import create_app
from devkit import evmkit, refundkit
from devkit.anvil import Anvil, Token
from devkit.api_support import client, record_payment
from devkit.refundkit import HEADERS
from tests.integration import test_explain
from watcher import db, ledger
from watcher.refunds import proof, worker

PRICE = 100_000  # the default $0.10 a call


async def event_types(pool: db.Pool, refund_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM events WHERE resource_id = $1 ORDER BY id", f"ref_{refund_id}"
    )
    return [r["type"] for r in rows]


async def test_a_credited_payment_is_refunded_to_its_sender_and_confirmed_by_the_follower(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 2_000_000)
    before = await usdc.balance_of(w.payer)
    settings = w.settings()
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={"payment_id": pid, "reason": "customer asked", "refund_key": "rf-1"},
        )
        assert made.status_code == 200, made.text
        refund = made.json()
        assert (refund["status"], refund["amount"], refund["destination"]) == (
            "requested",
            "2000000",
            w.payer,
        )
        assert refund["created"] is True and refund["requested_by"] == refundkit.OPERATOR
        again = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={"payment_id": pid, "reason": "clicked twice", "refund_key": "rf-1"},
        )
        assert again.json()["id"] == refund["id"] and again.json()["created"] is False
        rid = int(refund["id"])
        assert await worker.run_pass(settings, pool) == {"base": 1}
        assert await refundkit.status(pool, rid) == "sent"
        assert await usdc.balance_of(w.payer) == before + 2_000_000
        await refundkit.follow(w, pool)
        shown = (await http.get(f"/x402/admin/refunds/{rid}", headers=HEADERS)).json()
    assert shown["status"] == "confirmed" and shown["out_tx_hash"] == shown["tx_hash"]
    assert await event_types(pool, rid) == ["refund.requested", "refund.sent", "refund.confirmed"]
    # another pass does nothing more: the refund is sent once
    assert await worker.run_pass(settings, pool) == {"base": 0}
    assert await usdc.balance_of(w.payer) == before + 2_000_000


async def test_the_unconsumed_part_of_a_token_is_refunded_and_the_token_shrinks(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_000_000)
    async with pool.acquire() as conn:
        tok = await ledger.claim(
            conn,
            secrets.token_bytes(32),
            pid,
            price=PRICE,
            lifetime=timedelta(hours=1),
            max_requests=2**31 - 1,
        )
    assert tok is not None and tok["remaining"] == 10
    await pool.execute("UPDATE access_tokens SET remaining = 7 WHERE id = $1", tok["id"])
    before = await usdc.balance_of(w.payer)
    settings = w.settings()
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={"payment_id": pid, "kind": "unconsumed", "reason": "unused"},
        )
        assert made.status_code == 200, made.text
        assert (made.json()["amount"], made.json()["calls"]) == ("700000", 7)
        assert (
            await pool.fetchval("SELECT remaining FROM access_tokens WHERE id = $1", tok["id"]) == 0
        )
        await worker.run_pass(settings, pool)
        await refundkit.follow(w, pool)
        more = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "all of it"}
        )
    assert await refundkit.status(pool, int(made.json()["id"])) == "confirmed"
    assert await usdc.balance_of(w.payer) == before + 700_000
    assert more.status_code == 409 and more.json()["error"] == "nothing_refundable"


async def test_a_signed_destination_receives_and_a_bad_proof_is_refused(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    payer = Account.create()
    await anvil.rpc("anvil_setBalance", payer.address, hex(10**18))
    await usdc.mint(payer.address.lower(), 5_000_000)
    await anvil.rpc("anvil_impersonateAccount", payer.address)
    pid = await refundkit.pay(w, pool, 1_000_000, sender=payer.address.lower())
    row = await pool.fetchrow("SELECT tx_hash, log_index FROM payments WHERE id = $1", pid)
    elsewhere = Account.create().address.lower()
    text = proof.message("base", row["tx_hash"], row["log_index"], elsewhere, 1_000_000)
    good = Account.sign_message(encode_defunct(text=text), payer.key).signature.hex()
    forged = Account.sign_message(encode_defunct(text=text), Account.create().key)
    settings = w.settings()
    body = {
        "payment_id": pid,
        "reason": "to my new wallet",
        "destination": elsewhere,
        "amount": 1_000_000,
    }
    async with client(create_app(settings, pool)) as http:
        bad = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={**body, "signature": "0x" + forged.signature.hex()},
        )
        none = await http.post("/x402/admin/refunds", headers=HEADERS, json=body)
        ok = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={**body, "signature": "0x" + good.removeprefix("0x")},
        )
    assert bad.status_code == 403 and bad.json()["error"] == "bad_proof"
    assert none.status_code == 403 and none.json()["error"] == "proof_required"
    assert ok.status_code == 200, ok.text
    assert ok.json()["proof"] == "signature" and ok.json()["destination"] == elsewhere
    await worker.run_pass(settings, pool)
    await refundkit.follow(w, pool)
    assert await usdc.balance_of(elsewhere) == 1_000_000
    assert await refundkit.status(pool, int(ok.json()["id"])) == "confirmed"


async def test_a_contract_source_is_refused_without_a_proof(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    # a payment whose Transfer came from a contract (here: the token contract's address)
    pid, _ = await record_payment(
        pool, from_address=usdc.address, to_address=w.receiver, token=usdc.address, amount=1_000_000
    )
    async with client(create_app(w.settings(), pool)) as http:
        got = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "refund"}
        )
        no_operator = await http.post(
            "/x402/admin/refunds",
            headers={"x-admin-key": HEADERS["x-admin-key"]},
            json={"payment_id": pid, "reason": "refund"},
        )
    assert got.status_code == 409 and got.json()["error"] == "source_is_contract"
    assert "claim_secret" in got.json()["fix"] and "contract" in got.json()["message"]
    assert no_operator.status_code == 400
    assert await pool.fetchval("SELECT count(*) FROM refunds WHERE payment_id = $1", pid) == 0


async def test_a_refund_far_below_the_head_is_confirmed_by_a_backfill_range(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_000_000)
    settings = w.settings()
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "r"}
        )
    await worker.run_pass(settings, pool)
    await anvil.mine(60)  # the follower meets it in one eth_getLogs range, not block by block
    await refundkit.follow(w, pool)
    row = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", int(made.json()["id"]))
    assert row["status"] == "confirmed" and row["out_tx_hash"] == row["tx_hash"]


async def test_a_reorg_unlinks_the_refund_transfer_and_the_same_bytes_land_again(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_000_000)
    settings = w.settings()
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "r"}
        )
    rid = int(made.json()["id"])
    snapshot = await anvil.rpc("evm_snapshot")
    before = await usdc.balance_of(w.payer)
    await worker.run_pass(settings, pool)  # signed, sent, mined in the next block
    async with refundkit.follower(w, pool) as f:
        await evmkit.drain(f)  # seen at the tip, not yet deep
    linked = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", rid)
    assert linked["status"] == "sent" and linked["out_block_number"] is not None
    assert await anvil.rpc("evm_revert", snapshot)  # the block (and the transfer) are gone
    await anvil.mine(3)  # another branch, longer than the one the follower saw
    async with refundkit.follower(w, pool) as f:
        await evmkit.drain(f)
    gone = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", rid)
    assert gone["status"] == "sent" and gone["out_tx_hash"] is None
    assert await usdc.balance_of(w.payer) == before
    await worker.run_pass(settings, pool)  # no receipt, nonce free: the same bytes again
    await refundkit.follow(w, pool)
    after = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", rid)
    assert after["status"] == "confirmed" and after["tx_hash"] == linked["tx_hash"]
    assert await usdc.balance_of(w.payer) == before + 1_000_000


async def test_explain_shows_a_payment_s_refund_and_names_our_refund_transfer(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_500_000)
    settings = w.settings()
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={"payment_id": pid, "reason": "customer asked", "refund_key": "rf-explain"},
        )
    assert made.status_code == 200, made.text
    await worker.run_pass(settings, pool)
    await refundkit.follow(w, pool)
    paid_tx = await pool.fetchval("SELECT tx_hash FROM payments WHERE id = $1", pid)
    out_tx = await pool.fetchval("SELECT out_tx_hash FROM refunds WHERE id = $1", made.json()["id"])
    env = {
        "X402_BASE_USDC_ADDRESS": usdc.address,
        "X402_BASE_PAYMENT_ADDRESS": w.receiver,
        "X402_BASE_RPC_URL": anvil.url,
        "X402_BASE_CHAIN_ID": str(anvil.chain_id),
        "DATABASE_URL": database_url,
    }
    code, out, err = test_explain.explain("--chain", "base", paid_tx, **env)
    assert code == 0, err
    assert f"refund {made.json()['id']} (rf-explain) of 1.50 USDC to {w.payer}: confirmed" in out
    assert f"in tx {out_tx}" in out and f"asked by {refundkit.OPERATOR}" in out
    code, out, err = test_explain.explain("--chain", "base", out_tx, **env)
    assert code == 0, err
    assert f"our refund {made.json()['id']} (rf-explain)" in out
    assert f"for the payment in tx {paid_tx}" in out
