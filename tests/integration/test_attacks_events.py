"""Attacks on issue 14's events, webhooks, feed and live streams (each a hole once)."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx

from api import live
from devkit import sse
from devkit.api_support import app_for, serve
from devkit.webhook_receiver import Answer, Receiver
from watcher import db, events
from watcher.webhooks import netguard, record, signing, worker


async def _invoice(http: httpx.AsyncClient) -> str:
    got = await http.post("/x402/invoices", json={"chain": "base", "requests": 2})
    assert got.status_code == 201, got.text
    return str(got.json()["invoice_id"])


async def test_one_client_cannot_hold_unbounded_invoice_streams(pool: db.Pool) -> None:
    """A stranger opened thousands of SSE streams on one invoice (no cap anywhere): each
    holds a socket and a task, and every wake-up makes each of them read the invoice
    from a ten-connection pool. Now a client holds at most
    WATCHER_SSE_MAX_STREAMS_PER_CLIENT (8)."""
    app = app_for(pool, watcher_sse_heartbeat_seconds=5)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        hub: live.Hub = app.state.live
        await asyncio.wait_for(hub.connected.wait(), 10)
        path = f"/x402/invoices/{await _invoice(http)}/events"
        cap = 8
        assert app.state.settings.watcher_sse_max_streams_per_client == cap  # the default
        async with contextlib.AsyncExitStack() as stack:
            # Kept in a list: a Stream collected closes its response.
            streams = [
                await stack.enter_async_context(sse.open_stream(http, path)) for _ in range(cap)
            ]
            for s in streams:
                first = await s.next()
                assert first is not None and first.event == "open"
            over = await http.get(path, headers={"accept": "text/event-stream"})
            assert over.status_code == 429, over.text
            assert over.json()["error"] == "too_many_streams"
            assert "Retry-After" in over.headers
            assert hub.subscribers() == cap
        # Closing them frees the client's places.
        for _ in range(200):  # bounded: 10 s
            if hub.subscribers() == 0:
                break
            await asyncio.sleep(0.05)
        async with sse.open_stream(http, path) as again:
            assert (await again.next()) is not None


async def test_a_process_holds_at_most_its_stream_cap(pool: db.Pool) -> None:
    """Many clients (an IPv6 /48 is 65,536 buckets) share the process's cap."""
    app = app_for(pool, watcher_sse_heartbeat_seconds=5, watcher_sse_max_streams=3)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        hub: live.Hub = app.state.live
        await asyncio.wait_for(hub.connected.wait(), 10)
        path = f"/x402/invoices/{await _invoice(http)}/events"
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(sse.open_stream(http, path)) for _ in range(3)
            ]
            for s in streams:
                assert (await s.next()) is not None
            over = await http.get(path, headers={"accept": "text/event-stream"})
            assert over.status_code == 503, over.text
            assert over.json()["error"] == "too_many_streams"


async def test_a_disabled_endpoints_event_does_not_carry_its_secret_url(pool: db.Pool) -> None:
    """Receivers such as Slack's or Zapier's take a URL whose path (or query) is the
    credential. webhook_endpoint.disabled carried the endpoint's whole URL to every
    other endpoint wanting it and to every read-only feed key: a foothold learnt a URL
    to post forged events to. The event names the endpoint by id and origin only."""
    url = "https://hooks.example.com:8443/services/T0001/B0002/s3cretPathToken?key=s3cretQuery"
    endpoint = await pool.fetchval(
        "INSERT INTO webhook_endpoints (url, event_types, secret, failing_since) "
        "VALUES ($1, ARRAY['*'], $2, now() - interval '200 hours') RETURNING id",
        url,
        signing.new_secret(),
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await record.disable_if_failing_too_long(conn, endpoint, 120)
    row = await pool.fetchrow("SELECT * FROM events WHERE type = 'webhook_endpoint.disabled'")
    assert row is not None and row["resource_id"] == endpoint
    text = row["data"]
    assert "s3cret" not in text, text
    assert json.loads(text)["url"] == "https://hooks.example.com:8443"


async def test_a_tarpit_receiver_does_not_take_every_delivery_slot(pool: db.Pool) -> None:
    """A merchant's receiver (or one behind a firewall that drops packets) answers
    nothing until the timeout. Claims took due deliveries in order whatever their
    endpoint, so its deliveries soon held every slot, each for the whole timeout, and
    every other endpoint's events waited behind them. An endpoint now holds at most
    WATCHER_WEBHOOK_CONCURRENCY_PER_ENDPOINT of a worker's slots."""
    tarpit = Receiver(secrets=[], behave=lambda _i, _n: Answer(200, delay=5.0))
    honest = Receiver(secrets=[])
    await pool.fetchval(
        "INSERT INTO webhook_endpoints (url, event_types, secret) VALUES ($1, ARRAY['*'], $2)"
        " RETURNING id",
        tarpit.url,
        signing.new_secret(),
    )
    key = signing.new_secret()
    await pool.fetchval(
        "INSERT INTO webhook_endpoints (url, event_types, secret) VALUES ($1, ARRAY['*'], $2)"
        " RETURNING id",
        honest.url,
        key,
    )
    honest.secrets = [key]
    async with pool.acquire() as conn:
        for i in range(24):
            await events.emit(conn, "subscription.activated", f"sub_{i}", {"tier": "pro"})
    cfg = worker.Config(
        schedule=worker.schedule.parse("1h"),
        timeout=1.0,
        concurrency=8,
        per_endpoint_limit=2,
        policy=netguard.Policy(production=False),
    )
    stop = asyncio.Event()
    async with tarpit, honest:
        w = worker.Worker(pool, cfg)
        task = asyncio.create_task(w.run(stop))
        t0 = asyncio.get_running_loop().time()
        try:
            for _ in range(200):  # bounded: 10 s
                if len(honest.ids()) == 24:
                    break
                await asyncio.sleep(0.05)
            took = asyncio.get_running_loop().time() - t0
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert len(honest.ids()) == 24 and honest.unverified() == []
    # 24 tarpit attempts of 1 s on 8 slots is 3 s of a full worker; with at most 2
    # slots to the tarpit the honest receiver has its 24 at once.
    assert took < 1.5, took


async def test_a_stream_dropped_for_not_reading_still_counts_until_it_ends(
    pool: db.Pool,
) -> None:
    """A client that never reads is dropped by the hub once its queue fills, but its
    stream's coroutine waits on the socket until the client goes. The caps counted the
    hub's subscribers, so each drop gave the client a new place: eight stuck sockets a
    minute, without end. A stream counts until its subscription ends."""
    hub = live.Hub(live.pool_connector(pool))
    hub.start()
    caps = (100, 2)
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        with hub.subscribe("inv-1", "base", "198.51.100.7", caps) as a:
            with hub.subscribe("inv-1", "base", "198.51.100.7", caps) as b:
                assert not a.dropped and not b.dropped
                async with pool.acquire() as conn:
                    for _ in range(live.QUEUE_SIZE + 2):
                        await conn.execute("SELECT pg_notify('watcher_invoices', 'inv-1')")
                for _ in range(200):  # bounded: 10 s
                    if a.dropped and b.dropped:
                        break
                    await asyncio.sleep(0.05)
                assert a.dropped and b.dropped and hub.subscribers() == 0
                assert hub.refusal("198.51.100.7", caps) == "client"
                with hub.subscribe("inv-1", "base", "198.51.100.7", caps) as c:
                    assert c.dropped  # over the cap: never registered
            assert hub.refusal("198.51.100.7", caps) is None  # b ended: a place again
        assert hub.refusal("198.51.100.7", (1, 2)) is None  # nothing open
    finally:
        await hub.stop()
