"""Standard x402 `exact` on Solana end to end: the x402 package's own SVM client pays our paid
route, we co-sign as fee payer on the local LiteSVM node (the real SPL Token program), serve the
call once, and the Solana follower credits the transfer at `finalized`, linked and claimed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from api.app import create_app
from devkit.api_support import serve
from devkit.solana_node import World as NodeWorld
from devkit.x402svmkit import (
    NETWORK,
    PRICE,
    ROUTE,
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
from watcher.chains import solana

LIGHTHOUSE = Pubkey.from_string("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95")
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


@pytest.fixture
def x402(world: NodeWorld) -> World:
    return make_world(world)


async def settlements(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM x402_solana_settlements ORDER BY id")
        return [dict(r) for r in rows]


async def payments(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM payments ORDER BY id")]


async def follow_to_finalized(x402: World, pool: db.Pool) -> list[dict[str, Any]]:
    """The Solana follower sees the settlement at confirmed, then at finalized."""
    f = solana.make_follower(x402.settings, pool, "solana", poll_interval=0.05)
    try:
        await f.sync_once()
        x402.node.node.chain.advance(3)
        await f.sync_once()
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    return await payments(pool)


async def test_v2_client_pays_then_200_and_the_follower_credits_it_once(
    x402: World, pool: db.Pool
) -> None:
    app = create_app(x402.settings, pool)
    fee_payer_before = x402.lamports(x402.fee_payer.pubkey())
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        assert offer["scheme"] == "exact" and offer["network"] == NETWORK
        assert (offer["asset"], offer["payTo"]) == (str(x402.usdc), str(x402.owner))
        assert offer["amount"] == str(PRICE) and offer["maxTimeoutSeconds"] > 0
        assert offer["extra"] == {"feePayer": str(x402.fee_payer.pubkey())}
        header = await client_v2_header(http, x402)
        paid = await http.get(ROUTE, headers=header)
        assert paid.status_code == 200, paid.text
        assert paid.json()["result"] == "paid content"
        settled = decode_header(paid.headers["PAYMENT-RESPONSE"])
        assert settled["success"] is True and settled["network"] == NETWORK
        assert settled["payer"] == str(x402.alice.pubkey())
        assert settled["amount"] == str(PRICE)
        replay = await http.get(ROUTE, headers=header)  # the same header again
    assert replay.status_code == 402
    assert replay.json()["error"] == "duplicate_settlement"
    assert x402.balance(x402.owner) == PRICE  # one transfer, not two
    # We paid the fee: 5000 lamports a signature (two), plus at most the priority fee the
    # client asked (20 000 units at 1 micro-lamport: 1 lamport).
    assert fee_payer_before - x402.lamports(x402.fee_payer.pubkey()) - 2 * 5_000 in (0, 1)
    chain = x402.node.node.chain
    landed = chain.by_sig[settled["transaction"]]
    assert landed.err is None and landed.memo  # the client's nonce memo went on chain

    (payment,) = await follow_to_finalized(x402, pool)
    assert (payment["tx_hash"], payment["amount"]) == (settled["transaction"], PRICE)
    assert payment["state"] == "claimed"  # served at settlement: never claimable again
    assert "x402 solana settlement" in payment["reason"]
    (row,) = await settlements(pool)
    assert (row["status"], row["payment_id"], row["x402_version"]) == (
        "settled",
        payment["id"],
        2,
    )
    assert (row["signature"], row["payer"]) == (settled["transaction"], str(x402.alice.pubkey()))
    assert landed.memo == f"[{len(row['nonce'])}] {row['nonce']}"  # as a node reports memos


async def test_v1_client_pays_with_x_payment(x402: World, pool: db.Pool) -> None:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        body = (await http.get(ROUTE)).json()
        entry = next(a for a in body["accepts"] if a["network"] == "solana-devnet")
        assert entry["maxAmountRequired"] == str(PRICE) and entry["asset"] == str(x402.usdc)
        assert entry["extra"]["feePayer"] == str(x402.fee_payer.pubkey())
        header = await client_v1_header(http, x402)
        paid = await http.get(ROUTE, headers=header)
    assert paid.status_code == 200, paid.text
    settled = decode_header(paid.headers["X-PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["network"] == "solana-devnet"
    (payment,) = await follow_to_finalized(x402, pool)
    assert (payment["tx_hash"], payment["state"]) == (settled["transaction"], "claimed")
    (row,) = await settlements(pool)
    assert (row["status"], row["x402_version"]) == ("settled", 1)


def _bad_cases(x402: World) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each case: the reason we must answer, and how the transaction bends the rules."""
    bank = x402.node.bank
    other_mint = bank.create_mint(6)
    bank.mint_to(other_mint, x402.alice.pubkey(), 10 * PRICE)
    stranger = Keypair()
    bank.create_ata(stranger.pubkey(), x402.usdc)
    poor = bank.wallet(1)
    bank.create_ata(poor.pubkey(), x402.usdc)
    sol_transfer = transfer(
        TransferParams(from_pubkey=x402.alice.pubkey(), to_pubkey=stranger.pubkey(), lamports=1)
    )
    return {
        "bad signature": ("invalid_exact_svm_payload_signature", {"signer": Keypair()}),
        "too little": ("invalid_exact_svm_payload_amount_insufficient", {"amount": PRICE - 1}),
        "too much": ("invalid_exact_svm_payload_amount_mismatch", {"amount": PRICE + 1}),
        "wrong recipient": (
            "invalid_exact_svm_payload_recipient_mismatch",
            {"to_owner": stranger.pubkey()},
        ),
        "wrong mint": ("invalid_exact_svm_payload_mint_mismatch", {"mint": other_mint}),
        "someone else's fee payer": (
            "fee_payer_not_managed_by_facilitator",
            {"fee_payer": stranger.pubkey()},
        ),
        "fee payer as the authority": (
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
            {"payer": x402.fee_payer},
        ),
        "priority fee over our cap": (
            "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
            {"units": 1_400_000, "micro_lamports": 5_000_000},
        ),
        "an extra SOL transfer": (
            "invalid_exact_svm_payload_unknown_fourth_instruction",
            {"memo": None, "extra": (sol_transfer,)},
        ),
        "a Lighthouse assertion": (
            "invalid_exact_svm_payload_unknown_fifth_instruction",
            {"extra": (Instruction(LIGHTHOUSE, bytes([0]), []),)},
        ),
        "two memos": (
            "invalid_exact_svm_payload_memo_count",
            {"extra": (Instruction(MEMO, b"second", []),)},
        ),
        "our fee payer signing the memo": (
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
            {"memo_signers": (x402.fee_payer.pubkey(),)},
        ),
        "a third signer": ("invalid_exact_svm_payload", {"memo_signers": (stranger.pubkey(),)}),
        "an address lookup table": ("invalid_exact_svm_payload", {"lookup_table": True}),
        "wrong decimals": ("invalid_exact_svm_payload", {"decimals": 9}),
        "expired blockhash": (
            "transaction_simulation_failed",
            {"blockhash": Hash.new_unique()},
        ),
        "payer without the money": ("transaction_simulation_failed", {"payer": poor}),
    }


async def test_every_bad_payment_is_refused_with_its_reason_and_nothing_moves(
    x402: World, pool: db.Pool
) -> None:
    cases = _bad_cases(x402)
    app = create_app(x402.settings, pool)
    alice_before = x402.balance(x402.alice.pubkey())
    history = len(x402.node.node.chain.by_sig)
    got: dict[str, str] = {}
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        for name, (_, bend) in cases.items():
            resp = await http.get(ROUTE, headers=v2_header_for(offer, payment_tx(x402, **bend)))
            assert resp.status_code == 402, (name, resp.text)
            assert "result" not in resp.json()
            required = decode_header(resp.headers["PAYMENT-REQUIRED"])
            # v2: the human-readable message in ``error``, our code in extensions
            assert required["error"] == resp.json()["message"]
            assert required["extensions"]["watcher"]["code"] == resp.json()["error"]
            got[name] = resp.json()["error"]
    assert got == {name: reason for name, (reason, _) in cases.items()}
    assert await settlements(pool) == []  # nothing claimed
    assert len(x402.node.node.chain.by_sig) == history  # nothing sent
    assert x402.balance(x402.alice.pubkey()) == alice_before
    assert x402.balance(x402.owner) == 0


async def test_a_reused_memo_nonce_is_refused_even_in_a_new_transaction(
    x402: World, pool: db.Pool
) -> None:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        first = await http.get(ROUTE, headers=v2_header_for(offer, payment_tx(x402, memo=b"n-1")))
        assert first.status_code == 200, first.text
        x402.node.node.chain.advance(1)  # a newer blockhash: a different message, same nonce
        again = payment_tx(x402, memo=b"n-1")
        second = await http.get(ROUTE, headers=v2_header_for(offer, again))
    assert second.status_code == 402
    assert second.json()["error"] == "duplicate_settlement"
    assert x402.balance(x402.owner) == PRICE
    assert [r["status"] for r in await settlements(pool)] == ["settled"]


async def test_a_memo_holding_a_nul_is_a_402_not_a_database_outage(
    x402: World, pool: db.Pool
) -> None:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        tx = payment_tx(x402, memo=b"n\x00-1")  # valid UTF-8; PostgreSQL text refuses it
        resp = await http.get(ROUTE, headers=v2_header_for(offer, tx))
    assert resp.status_code == 402, resp.text
    assert resp.json()["error"] == "invalid_exact_svm_payload"
    assert x402.balance(x402.owner) == 0 and await settlements(pool) == []


async def test_two_concurrent_requests_with_one_payment_serve_once(
    x402: World, pool: db.Pool
) -> None:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = v2_header_for(await solana_offer(http), payment_tx(x402))
        answers = await asyncio.gather(*(http.get(ROUTE, headers=header) for _ in range(2)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 402], [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 402)
    # Refused as a replay, or as a second payment from a source with one in flight.
    assert refused.json()["error"] in ("duplicate_settlement", "settlement_pending")
    assert x402.balance(x402.owner) == PRICE
    assert [r["status"] for r in await settlements(pool)] == ["settled"]


async def test_unfunded_fee_payer_is_a_clear_503_and_nothing_is_charged(
    world: NodeWorld, pool: db.Pool
) -> None:
    x402 = make_world(world, fee_payer_sol=0)
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = v2_header_for(await solana_offer(http), payment_tx(x402))
        resp = await http.get(ROUTE, headers=header)
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["error"] == "fee_payer_unfunded"
    assert str(x402.fee_payer.pubkey()) in body["message"] and "fund" in body["fix"]
    assert await settlements(pool) == []
    assert x402.balance(x402.owner) == 0


async def test_a_settlement_dropped_with_its_fork_is_never_counted_as_paid(
    x402: World, pool: db.Pool
) -> None:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = v2_header_for(await solana_offer(http), payment_tx(x402))
        paid = await http.get(ROUTE, headers=header)
    assert paid.status_code == 200, paid.text
    signature = decode_header(paid.headers["PAYMENT-RESPONSE"])["transaction"]
    chain = x402.node.node.chain
    f = solana.make_follower(x402.settings, pool, "solana", poll_interval=0.05)
    try:
        await f.sync_once()
        assert [p["state"] for p in await payments(pool)] == ["observed"]
        assert chain.drop_slots(chain.by_sig[signature].slot) == [signature]
        chain.advance(4)
        await f.sync_once()
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    (payment,) = await payments(pool)
    assert payment["state"] == "orphaned"
    (row,) = await settlements(pool)
    assert row["status"] == "reorged" and "fork" in row["error"]
    assert row["payment_id"] is None
