"""GET /x402/invoices/{id}/events: a real payment on anvil, followed live over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from devkit import evmkit, sse
from devkit.anvil import Anvil, Token
from devkit.api_support import app_for, serve
from watcher import db, ledger


def _app(pool: db.Pool, anvil: Anvil, usdc: Token, receiver: str) -> FastAPI:
    return app_for(
        pool,
        x402_base_payment_address=receiver,
        x402_base_usdc_address=usdc.address,
        x402_base_chain_id=anvil.chain_id,
        x402_base_confirmations=3,
        watcher_sse_heartbeat_seconds=0.3,
    )


@contextlib.asynccontextmanager
async def _served(
    pool: db.Pool, anvil: Anvil, usdc: Token, receiver: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The API over real HTTP and a follower of anvil, both for ``receiver``."""
    chain = evmkit.evm_chain(anvil, usdc, [receiver], confirmations=3)
    async with (
        serve(_app(pool, anvil, usdc, receiver)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
        evmkit.follower(chain, pool) as follower,
    ):
        yield http, follower


async def test_a_payment_followed_from_open_to_claimed(
    pool: db.Pool, anvil: Anvil, usdc: Token
) -> None:
    receiver = anvil.accounts[9]
    async with _served(pool, anvil, usdc, receiver) as (http, follower):
        await evmkit.drain(follower)  # the follower is at the head before the invoice
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 3})).json()
        path = f"/x402/invoices/{inv['invoice_id']}/events"
        async with sse.open_stream(http, path) as stream:
            first = await stream.next()
            assert first is not None and first.event == "open"
            assert first.data["invoice_id"] == inv["invoice_id"] and first.data["status"] == "open"

            receipt = await usdc.transfer(anvil.accounts[1], receiver, int(inv["amount"]))
            tx = receipt["transactionHash"].lower()
            await evmkit.drain(follower)
            paid = await stream.next()
            assert paid is not None and paid.event == "paid"
            assert paid.data["payment"]["tx_hash"] == tx
            assert paid.data["payment"]["confirmations"] == {"have": 1, "need": 3}

            await anvil.mine(1)
            await evmkit.drain(follower)  # a new head: the count rises, no outbox event
            more = await stream.next()
            assert more is not None and more.event == "confirmations"
            assert more.data["confirmations"] == {"have": 2, "need": 3}
            assert more.data["tx_hash"] == tx

            await anvil.mine(1)
            await evmkit.drain(follower)  # depth 3: credited in the same step
            credited = await stream.next()
            assert credited is not None and credited.event == "credited"
            assert credited.data["payment"]["tx_hash"] == tx

            claim = {"invoice_id": inv["invoice_id"], "claim_secret": inv["claim_secret"]}
            got = await http.post("/x402/generate-token", json=claim)
            assert got.status_code == 201, got.text
            claimed = await stream.next()
            assert claimed is not None and claimed.event == "claimed"
            assert claimed.data["token_id"] == got.json()["token_id"]
            assert await stream.next() is None  # terminal: the server ends the stream
        seen = [first, paid, more, credited, claimed]
        assert len({m.id for m in seen}) == len(seen)  # every message has its own id


async def test_last_event_id_resumes_with_only_what_is_new(
    pool: db.Pool, anvil: Anvil, usdc: Token
) -> None:
    receiver = anvil.accounts[9]
    async with _served(pool, anvil, usdc, receiver) as (http, follower):
        await evmkit.drain(follower)
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 2})).json()
        path = f"/x402/invoices/{inv['invoice_id']}/events"
        await usdc.transfer(anvil.accounts[1], receiver, int(inv["amount"]))
        await evmkit.drain(follower)
        async with sse.open_stream(http, path) as stream:
            paid = await stream.next()
            assert paid is not None and paid.event == "paid" and paid.id is not None
        # Away while a block is mined: back with the last id, only the new count comes.
        await anvil.mine(1)
        await evmkit.drain(follower)
        async with sse.open_stream(http, path, last_event_id=paid.id) as stream:
            again = await stream.next()
            assert again is not None and again.event == "confirmations"
            assert again.data["confirmations"] == {"have": 2, "need": 3}
            assert again.id is not None
        # Back with the newest id: nothing is sent again, only heartbeats until a change.
        async with sse.open_stream(http, path, last_event_id=again.id) as stream:
            assert await stream.next_item() == sse.COMMENT
            assert await stream.next_item() == sse.COMMENT
            await anvil.mine(1)
            await evmkit.drain(follower)
            credited = await stream.next()
            assert credited is not None and credited.event == "credited"
        # Away across the credit: the state comes, the confirmations in between do not.
        async with sse.open_stream(http, path, last_event_id=paid.id) as stream:
            late = await stream.next()
            assert late is not None and late.event == "credited" and late.id == credited.id
        # An id this stream never wrote is no resume point: the state is sent.
        async with sse.open_stream(http, path, last_event_id="evt_12") as stream:
            fresh = await stream.next()
            assert fresh is not None and fresh.event == "credited"


async def test_an_expired_invoice_ends_its_stream(pool: db.Pool) -> None:
    app = app_for(pool, watcher_sse_heartbeat_seconds=0.3)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 1})).json()
        async with sse.open_stream(http, f"/x402/invoices/{inv['invoice_id']}/events") as stream:
            first = await stream.next()
            assert first is not None and first.event == "open"
            # Its validity and the late-payment grace are over: the cleanup expires it.
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "UPDATE invoices SET created_at = now() - interval '3 hours',"
                    " expires_at = now() - interval '2 hours' WHERE id = $1",
                    inv["invoice_id"],
                )
                assert await ledger.expire_invoices(conn) == 1
            expired = await stream.next()
            assert expired is not None and expired.event == "expired"
            assert expired.data["status"] == "expired"
            assert await stream.next() is None
        # A stream opened on an invoice already over ends after its one state.
        async with sse.open_stream(http, f"/x402/invoices/{inv['invoice_id']}/events") as stream:
            again = await stream.next()
            assert again is not None and again.event == "expired"
            assert await stream.next() is None


async def test_unknown_invoice_is_a_404_with_our_error_body(pool: db.Pool) -> None:
    app = app_for(pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        got = await http.get("/x402/invoices/00000000-0000-4000-8000-000000000000/events")
        assert got.status_code == 404 and got.json()["error"] == "invoice_not_found"
        bad = await http.get("/x402/invoices/not-a-uuid/events")
        assert bad.status_code == 422


async def test_an_unpaid_invoice_is_sent_expired_when_its_validity_ends(pool: db.Pool) -> None:
    app = app_for(pool, watcher_sse_heartbeat_seconds=0.5)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 1})).json()
        await pool.execute(
            "UPDATE invoices SET expires_at = now() + interval '1 second' WHERE id = $1",
            inv["invoice_id"],
        )
        async with sse.open_stream(http, f"/x402/invoices/{inv['invoice_id']}/events") as stream:
            first = await stream.next()
            assert first is not None and first.event == "open"
            # No event marks the end of its validity: the stream reads at that moment.
            expired = await stream.next(timeout=10)
            assert expired is not None and expired.event == "expired"
            # Late payments may still pay it during the grace: the stream stays open.
            assert await stream.next_item() == sse.COMMENT
