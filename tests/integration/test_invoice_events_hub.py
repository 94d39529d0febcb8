"""api/live.py: one listening connection per process, fanned out; it survives losing it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from api import live
from devkit import sse
from devkit.api_support import app_for, record_payment, serve
from watcher import db

LISTENERS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE 'usdc-watcher live%'"
)
LISTENER_PID = (
    "SELECT pid FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE 'usdc-watcher live%'"
)


async def _until(check: object, what: str, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):  # bounded
        if check() if callable(check) else check:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _invoice(http: httpx.AsyncClient) -> dict[str, str]:
    got = await http.post("/x402/invoices", json={"chain": "base", "requests": 2})
    assert got.status_code == 201, got.text
    body: dict[str, str] = got.json()
    return body


@contextlib.asynccontextmanager
async def _streams(http: httpx.AsyncClient, path: str, n: int) -> AsyncIterator[list[sse.Stream]]:
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(sse.open_stream(http, path)) for _ in range(n)]
        yield streams


async def test_many_clients_share_one_listening_connection(pool: db.Pool) -> None:
    # All 21 streams come from 127.0.0.1: one client, above the default per-client cap.
    caps = {"watcher_sse_heartbeat_seconds": 5, "watcher_sse_max_streams_per_client": 25}
    app = app_for(pool, **caps)
    other = app_for(pool, **caps)  # as the gateway's own listener
    async with (
        serve(app) as url,
        serve(other) as other_url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        hub: live.Hub = app.state.live
        assert other.state.live is hub  # two apps of one process: one hub
        await asyncio.wait_for(hub.connected.wait(), 10)
        inv = await _invoice(http)
        async with _streams(http, f"/x402/invoices/{inv['invoice_id']}/events", 20) as streams:
            for s in streams:
                first = await s.next()
                assert first is not None and first.event == "open"
            async with (
                httpx.AsyncClient(base_url=other_url, timeout=30) as http2,
                sse.open_stream(http2, f"/x402/invoices/{inv['invoice_id']}/events") as there,
            ):
                assert (await there.next()) is not None
                assert hub.subscribers() == 21
                assert await pool.fetchval(LISTENERS) == 1  # 21 streams, two apps, one LISTEN
            _, tx = await record_payment(pool, amount=int(inv["amount"]), credit=False)
            for s in streams:
                paid = await s.next()
                assert paid is not None and paid.event == "paid"
                assert paid.data["payment"]["tx_hash"] == tx
        await _until(lambda: hub.subscribers() == 0, "the streams to leave the hub")
    assert await pool.fetchval(LISTENERS) == 0  # stopped with the app's lifespan


async def test_the_hub_survives_losing_its_connection(pool: db.Pool) -> None:
    app: FastAPI = app_for(pool, watcher_sse_heartbeat_seconds=0.5)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        hub: live.Hub = app.state.live
        await asyncio.wait_for(hub.connected.wait(), 10)
        inv = await _invoice(http)
        async with sse.open_stream(http, f"/x402/invoices/{inv['invoice_id']}/events") as stream:
            first = await stream.next()
            assert first is not None and first.event == "open"
            pid = await pool.fetchval(LISTENER_PID)
            assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
            # Paid while the hub may be away: its NOTIFY can be lost; the reconnect's
            # wake-up makes the stream read again, so the state still arrives.
            _, tx = await record_payment(pool, amount=int(inv["amount"]), credit=False)
            paid = await stream.next()
            assert paid is not None and paid.event == "paid"
            assert paid.data["payment"]["tx_hash"] == tx
            await _until(lambda: hub.sessions >= 2, "the hub to reconnect")
            assert await pool.fetchval(LISTENERS) == 1
            assert await pool.fetchval(LISTENER_PID) != pid
            # And it is listening again: the next change comes through NOTIFY.
            async with pool.acquire() as conn:
                await conn.execute("SELECT pg_notify('watcher_invoices', $1)", inv["invoice_id"])
            assert await stream.next_item() == sse.COMMENT  # nothing new: read, nothing sent
            assert not stream.ended


async def test_a_slow_client_is_dropped_not_the_hub(pool: db.Pool) -> None:
    hub = live.Hub(live.pool_connector(pool))
    hub.start()
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        with hub.subscribe("inv-1", "base") as slow, hub.subscribe("inv-1", "base") as fast:
            seen: list[str] = []

            async def drain() -> None:
                while True:
                    seen.append(await fast.queue.get())

            reader = asyncio.create_task(drain())
            try:
                async with pool.acquire() as conn:
                    for _ in range(live.QUEUE_SIZE + 8):  # one NOTIFY per statement
                        await conn.execute("SELECT pg_notify('watcher_invoices', 'inv-1')")
                        await asyncio.sleep(0.01)
                await _until(lambda: len(seen) == live.QUEUE_SIZE + 8, "the fast client")
                assert slow.dropped and not fast.dropped and hub.dropped == 1
                assert slow.queue.get_nowait() == "dropped" and slow.queue.empty()
                assert hub.subscribers() == 1 and hub.connected.is_set()
                async with pool.acquire() as conn:
                    await conn.execute("SELECT pg_notify('watcher_heads', 'base:77')")
                await _until(lambda: seen[-1] == "head", "a head after the drop")
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    finally:
        await hub.stop()
    assert not hub.running
