"""Solana `exact` settlement when the RPC node misbehaves (a fault proxy at the transport
seam), and the settlement rows' bookkeeping against the follower's payment rows."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from solders.transaction import VersionedTransaction
from starlette.responses import Response

from api.app import create_app
from api.x402 import svm_settle
from devkit.api_support import serve
from devkit.faultproxy import FaultProxy
from devkit.solana_node import World as NodeWorld
from devkit.x402svmkit import (
    PRICE,
    ROUTE,
    World,
    decode_header,
    make_world,
    payment_tx,
    solana_offer,
    v2_header_for,
)
from watcher import db, ledger
from watcher.chains import solana


@pytest.fixture
async def proxy(world: NodeWorld) -> AsyncIterator[FaultProxy]:
    p = await FaultProxy(world.node.url, world.node.ws_url).start()
    try:
        yield p
    finally:
        await p.stop()


def via_proxy(world: NodeWorld, proxy: FaultProxy, **over: Any) -> World:
    return make_world(world, x402_solana_rpc_url=proxy.url, **over)


def answer(call: dict[str, Any], result: Any) -> Response:
    body = {"jsonrpc": "2.0", "id": call.get("id"), "result": result}
    return Response(json.dumps(body), media_type="application/json")


def signature_of(call: dict[str, Any]) -> str:
    return str(VersionedTransaction.from_bytes(base64.b64decode(call["params"][0])).signatures[0])


async def settlements(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM x402_solana_settlements ORDER BY id")
        return [dict(r) for r in rows]


async def pay(x402: World, pool: db.Pool, **bend: Any) -> httpx.Response:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        header = v2_header_for(await solana_offer(http), payment_tx(x402, **bend))
        return await http.get(ROUTE, headers=header)


async def test_a_send_that_landed_but_lost_its_answer_is_served_once(
    world: NodeWorld, pool: db.Pool, proxy: FaultProxy
) -> None:
    x402 = via_proxy(world, proxy)
    sends: list[str] = []

    async def lose_first_answer(call: dict[str, Any], p: FaultProxy) -> Response | None:
        if call.get("method") != "sendTransaction":
            return None
        sends.append(json.dumps(await p.forward(call)))
        if len(sends) == 1:  # it reached the node; the answer is lost on the way back
            return Response("upstream reset", 502)
        return None

    proxy.intercept = lose_first_answer
    resp = await pay(x402, pool)
    assert resp.status_code == 200, resp.text
    assert len(sends) >= 2 and "already been processed" in sends[1]
    assert x402.balance(x402.owner) == PRICE
    assert [r["status"] for r in await settlements(pool)] == ["settled"]


async def test_a_transaction_failing_on_chain_is_not_served_and_its_source_is_refused(
    world: NodeWorld, pool: db.Pool, proxy: FaultProxy
) -> None:
    x402 = via_proxy(world, proxy)
    poor = world.bank.wallet(1)
    world.bank.create_ata(poor.pubkey(), world.usdc)  # an empty token account

    async def lie(call: dict[str, Any], p: FaultProxy) -> Response | None:
        # Simulation says fine and preflight is skipped: the transfer fails on chain, as when
        # the payer spends the balance between our simulation and the landing.
        if call.get("method") == "simulateTransaction":
            return answer(call, {"context": {"slot": 1}, "value": {"err": None, "logs": []}})
        if call.get("method") == "sendTransaction":
            call["params"][1]["skipPreflight"] = True
            return Response(json.dumps(await p.forward(call)), media_type="application/json")
        return None

    proxy.intercept = lie
    resp = await pay(x402, pool, payer=poor)
    assert resp.status_code == 402, resp.text
    assert resp.json()["error"] == "transaction_failed"
    settled = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is False and settled["errorReason"] == "transaction_failed"
    landed = world.node.chain.by_sig[settled["transaction"]]
    assert landed.err is not None  # on chain, failed: we paid its fee, nothing moved
    (row,) = await settlements(pool)
    assert (row["status"], row["failed_on_chain"]) == ("failed", True)
    again = await pay(x402, pool, payer=poor)  # a fresh nonce from the same token account
    assert again.status_code == 402
    assert again.json()["error"] == "invalid_exact_svm_payload_source_failed_recently"
    assert len(await settlements(pool)) == 1


async def test_a_transaction_that_never_lands_expires_and_is_not_served(
    world: NodeWorld, pool: db.Pool, proxy: FaultProxy
) -> None:
    x402 = via_proxy(world, proxy)
    swallowed: list[str] = []

    async def swallow(call: dict[str, Any], p: FaultProxy) -> Response | None:
        if call.get("method") != "sendTransaction":
            return None
        swallowed.append(signature_of(call))
        if len(swallowed) == 1:  # time passes: the blockhash grows too old to land
            world.node.chain.advance(200)
        return answer(call, swallowed[-1])

    proxy.intercept = swallow
    resp = await pay(x402, pool)
    assert resp.status_code == 402, resp.text
    assert resp.json()["error"] == "transaction_failed" and "expired" in resp.json()["message"]
    (row,) = await settlements(pool)
    assert (row["status"], row["failed_on_chain"]) == ("failed", False)
    assert row["signature"] == swallowed[0] and swallowed[0] not in world.node.chain.by_sig
    assert x402.balance(x402.owner) == 0


async def test_no_answer_in_time_is_a_503_left_settling_and_a_late_landing_stays_claimable(
    world: NodeWorld, pool: db.Pool, proxy: FaultProxy
) -> None:
    x402 = via_proxy(world, proxy, x402_settle_timeout_seconds=3)
    held: list[str] = []

    async def hold(call: dict[str, Any], p: FaultProxy) -> Response | None:
        if call.get("method") != "sendTransaction":
            return None
        held.append(call["params"][0])
        return answer(call, signature_of(call))

    proxy.intercept = hold
    resp = await pay(x402, pool)
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["error"] == "settlement_pending" and "generate-token" in body["fix"]
    pending = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert pending["success"] is False and pending["transaction"]
    (row,) = await settlements(pool)
    assert row["status"] == "settling"  # not known to have failed: never served, never failed

    second = await pay(x402, pool)  # the same source while the first may still land
    assert second.status_code == 402 and second.json()["error"] == "settlement_pending"

    # The held transaction lands after all: an ordinary credited payment, the payer's to claim.
    world.node.chain.submit(base64.b64decode(held[0]))
    f = solana.make_follower(x402.settings, pool, "solana", poll_interval=0.05)
    try:
        await f.sync_once()
        world.node.chain.advance(3)
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    async with pool.acquire() as conn:
        payment = await conn.fetchrow("SELECT * FROM payments WHERE tx_hash = $1", row["signature"])
    assert payment is not None and payment["state"] == "credited"
    (row,) = await settlements(pool)
    assert (row["status"], row["payment_id"]) == ("settling", payment["id"])


# ---- bookkeeping between the settlement and the follower's payment row ----------------


async def _settling_row(conn: db.Connection, x402: World) -> dict[str, Any]:
    tx = svm_settle.co_sign(payment_tx(x402), x402.fee_payer)
    sig = str(tx.signatures[0])
    dest = str(x402.node.bank.ata(x402.owner, x402.usdc))
    settlement_id = await conn.fetchval(
        db.q("x402_svm_claim"),
        "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        str(x402.usdc),
        str(x402.alice.pubkey()),
        str(x402.node.bank.ata(x402.alice.pubkey(), x402.usdc)),
        str(x402.owner),
        dest,
        PRICE,
        "nonce-" + sig[:8],
        sig[:64],
        sig,
        str(x402.fee_payer.pubkey()),
        2,
        "http://127.0.0.1/x402/example/paid",
    )
    return {"id": settlement_id, "signature": sig, "destination": dest}


async def _payment(conn: db.Connection, x402: World, row: dict[str, Any], state: str) -> int:
    """The follower's row for the settlement: recorded observed, credited through the ledger."""
    seen = ledger.Transfer(
        chain="solana",
        tx_hash=row["signature"],
        log_index=2,
        block_number=10,
        block_hash=None,
        token=str(x402.usdc),
        to_address=str(x402.owner),
        amount=PRICE,
        from_address=str(x402.alice.pubkey()),
        token_account=row["destination"],
    )
    async with conn.transaction():
        (recorded,) = await ledger.record(conn, [seen])
        if state == "credited":
            await ledger.credit(conn, [recorded["id"]])
    payment_id: int = recorded["id"]
    return payment_id


async def test_a_credit_that_came_first_is_consumed_when_the_call_is_served(
    world: NodeWorld, pool: db.Pool
) -> None:
    x402 = make_world(world)
    async with pool.acquire() as conn:
        row = await _settling_row(conn, x402)
        payment_id = await _payment(conn, x402, row, "credited")  # ledger.credit links it
        assert (
            await conn.fetchval(
                "SELECT payment_id FROM x402_solana_settlements WHERE id = $1", row["id"]
            )
            == payment_id
        )
        assert await svm_settle.mark_settled(conn, row["id"]) is True
        state = await conn.fetchval("SELECT state FROM payments WHERE id = $1", payment_id)
        status = await conn.fetchval(
            "SELECT status FROM x402_solana_settlements WHERE id = $1", row["id"]
        )
    assert (state, status) == ("claimed", "settled")


async def test_a_payment_claimed_for_a_token_first_is_never_also_served(
    world: NodeWorld, pool: db.Pool
) -> None:
    x402 = make_world(world)
    async with pool.acquire() as conn:
        row = await _settling_row(conn, x402)
        payment_id = await _payment(conn, x402, row, "credited")
        await conn.execute("UPDATE payments SET state = 'claimed' WHERE id = $1", payment_id)
        assert await svm_settle.mark_settled(conn, row["id"]) is False
        status = await conn.fetchval(
            "SELECT status FROM x402_solana_settlements WHERE id = $1", row["id"]
        )
    assert status == "settling"  # rolled back; the API then marks it failed


async def test_a_dropped_fork_marks_only_a_served_settlement_reorged(
    world: NodeWorld, pool: db.Pool
) -> None:
    x402 = make_world(world)
    async with pool.acquire() as conn:
        still = await _settling_row(conn, x402)
        served = await _settling_row(conn, x402)
        assert await svm_settle.mark_settled(conn, served["id"]) is True
        for row in (still, served):
            pid = await _payment(conn, x402, row, "observed")
            async with conn.transaction():
                await ledger.orphan(conn, [pid], "dropped with its fork")
        got = {
            r["id"]: r["status"]
            for r in await conn.fetch("SELECT id, status FROM x402_solana_settlements")
        }
    assert got == {still["id"]: "settling", served["id"]: "reorged"}


async def test_payments_from_one_source_at_once_never_fail_on_chain_at_our_expense(
    world: NodeWorld, pool: db.Pool
) -> None:
    """Bob holds one price and sends four payments at once (four nonces). Each would pass a
    simulation on its own; one at a time per token account, only one lands, the others are
    refused before anything is sent."""
    bob = world.bank.wallet(1)
    world.bank.mint_to(world.usdc, bob.pubkey(), PRICE)
    x402 = make_world(world)
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        offer = await solana_offer(http)
        headers = [v2_header_for(offer, payment_tx(x402, payer=bob)) for _ in range(4)]
        answers = await asyncio.gather(*(http.get(ROUTE, headers=h) for h in headers))
    assert sorted(r.status_code for r in answers) == [200, 402, 402, 402]
    refused = [r.json() for r in answers if r.status_code == 402]
    for body in refused:
        # Usually refused at the claim or the simulation. On a loaded machine a request can
        # simulate before the first payment lands and claim after it settled: the node's
        # preflight then refuses it (or its blockhash expires unsent). Either costs nothing.
        assert body["error"] in {
            "settlement_pending",
            "transaction_simulation_failed",
            "transaction_failed",
        }, body
        if body["error"] == "transaction_failed":
            assert "refused" in body["message"] or "expired" in body["message"], body
    rows = await settlements(pool)
    assert [r["status"] for r in rows if r["status"] != "failed"] == ["settled"]
    assert not any(r["failed_on_chain"] for r in rows)  # nothing failed on chain: no fee spent
    assert x402.balance(x402.owner) == PRICE and x402.balance(bob.pubkey()) == 0


async def test_a_preflight_refusal_is_a_failure_that_does_not_block_the_source(
    world: NodeWorld, pool: db.Pool, proxy: FaultProxy
) -> None:
    x402 = via_proxy(world, proxy)
    poor = world.bank.wallet(1)
    world.bank.create_ata(poor.pubkey(), world.usdc)

    async def lying_simulation(call: dict[str, Any], p: FaultProxy) -> Response | None:
        if call.get("method") == "simulateTransaction":  # our check passes; preflight does not
            return answer(call, {"context": {"slot": 1}, "value": {"err": None, "logs": []}})
        return None

    proxy.intercept = lying_simulation
    resp = await pay(x402, pool, payer=poor)
    assert resp.status_code == 402, resp.text
    assert resp.json()["error"] == "transaction_failed" and "refused" in resp.json()["message"]
    (row,) = await settlements(pool)
    assert (row["status"], row["failed_on_chain"]) == ("failed", False)
    assert row["signature"] not in world.node.chain.by_sig  # it never went out
    world.bank.mint_to(world.usdc, poor.pubkey(), PRICE)  # now funded: not refused
    proxy.intercept = None
    again = await pay(x402, pool, payer=poor)
    assert again.status_code == 200, again.text
