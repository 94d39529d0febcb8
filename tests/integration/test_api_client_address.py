"""Per-client limits count real clients: X-Forwarded-For counts only through trusted proxies.

The app is served by uvicorn exactly as ``watcher run`` / ``watcher api``
configure it (watcher/daemon.py uvicorn_config); the test client is a local
process on 127.0.0.1, like a proxy that passes the header through would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx

from api import ratelimit
from devkit.api_support import app_for, fresh_rate_window, serve
from watcher import db

INVOICES = "/x402/invoices"
BODY = {"chain": "base", "requests": 2}
LIMIT = ratelimit.LIMITS["invoices"]


@asynccontextmanager
async def api(pool: db.Pool, trusted: str = "") -> AsyncIterator[httpx.AsyncClient]:
    await fresh_rate_window()  # every count below stays inside one minute's window
    app = app_for(pool, watcher_trusted_proxies=trusted)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


async def invoice(http: httpx.AsyncClient, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    r = await http.post(INVOICES, json=BODY, headers=headers)
    assert r.status_code in (201, 429), r.text
    return r.status_code


async def codes(http: httpx.AsyncClient, forwarded: Sequence[str | None]) -> list[int]:
    return [await invoice(http, f) for f in forwarded]


async def test_rotating_forwarded_for_without_trusted_proxies_is_one_client(
    pool: db.Pool,
) -> None:
    async with api(pool) as http:
        got = await codes(http, [f"198.51.100.{i}" for i in range(LIMIT + 3)])
    assert got == [201] * LIMIT + [429] * 3
    assert await pool.fetchval("SELECT count(*) FROM invoices") == LIMIT
    clients = await pool.fetch("SELECT DISTINCT client FROM api_rate_limits")
    assert [r["client"] for r in clients] == ["127.0.0.1"]


async def test_through_a_trusted_proxy_each_forwarded_client_counts_apart(
    pool: db.Pool,
) -> None:
    async with api(pool, trusted="127.0.0.1") as http:
        first = await codes(http, ["198.51.100.1"] * LIMIT)
        # The client prepends made-up hops; the proxy appends the address it saw.
        spoofed = await invoice(http, "203.0.113.77, 198.51.100.1")
        other = await invoice(http, "198.51.100.2")
        # Two proxies of ours in a row (127.0.0.1 forwarding for 127.0.0.1): still the client.
        chained = await invoice(http, "198.51.100.1, 127.0.0.1")
    assert first == [201] * LIMIT
    assert (spoofed, other, chained) == (429, 201, 429)


async def test_ipv6_clients_share_a_bucket_per_64(pool: db.Pool) -> None:
    async with api(pool, trusted="127.0.0.1, ::1") as http:
        rotated = await codes(http, [f"2001:db8:1:2::{i:x}" for i in range(1, LIMIT + 2)])
        same_64 = await invoice(http, "2001:db8:1:2:ffff:ffff:ffff:ffff")
        next_64 = await invoice(http, "2001:db8:1:3::1")
        mapped = await codes(http, ["::ffff:198.51.100.5"] * LIMIT + ["198.51.100.5"])
    assert rotated == [201] * LIMIT + [429]
    assert (same_64, next_64) == (429, 201)
    assert mapped == [201] * LIMIT + [429]  # an IPv4-mapped address is that IPv4 address
    clients = {r["client"] for r in await pool.fetch("SELECT client FROM api_rate_limits")}
    assert clients == {"2001:db8:1:2::/64", "2001:db8:1:3::/64", "198.51.100.5"}


async def test_malformed_forwarded_for_falls_back_to_the_peer(pool: db.Pool) -> None:
    async with api(pool, trusted="127.0.0.1") as http:
        junk = await codes(
            http,
            [f"not-an-ip-{i}" for i in range(LIMIT - 2)] + ["198.51.100.9, junk", "1.2.3.4:80"],
        )
        more_junk = await invoice(http, "198.51.100.9;evil")
        real = await invoice(http, "198.51.100.9")
    assert junk == [201] * LIMIT
    assert (more_junk, real) == (429, 201)  # the junk all landed on the proxy's own bucket
