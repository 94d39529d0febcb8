#!/usr/bin/env python3
"""Benchmark the Stripe rail; prints one JSON line.

* webhook: signed ``customer.subscription.updated`` deliveries over HTTP
  (uvicorn in this process, loopback), each applied in its own transaction:
  events/s and p50/p99 latency;
* metering: ``consume_subscriber_key`` (one UPDATE + usage row) straight on
  PostgreSQL from ``--concurrency`` tasks on one key: calls/s and p50/p99.

PostgreSQL: ``DATABASE_URL`` (a scratch database is created and dropped) or
the embedded server in a temporary directory.

    .venv/bin/python scripts/bench_stripe.py [--events 300] [--calls 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import entitlements
from devkit import stripe_helpers as sh
from devkit.pg import with_database
from watcher import db, keys


def figures(lat: list[float], wall: float) -> dict[str, float]:
    q = statistics.quantiles(lat, n=100)
    return {
        "per_second": round(len(lat) / wall, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


async def timed(make: Any, n: int, concurrency: int) -> tuple[list[float], float]:
    lat: list[float] = []
    todo = iter(range(n))

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            await make(i)
            lat.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return lat, time.perf_counter() - started


async def bench(dsn: str, events: int, calls: int, concurrency: int) -> dict[str, Any]:
    pool = await db.create_pool(dsn, min_size=concurrency, max_size=concurrency + 4)
    try:
        claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
        cid = await pool.fetchval(
            db.q("stripe_insert_checkout"),
            keys.sha256(claim),
            "enterprise",
            "b@example.com",
            timedelta(days=1),
        )
        settings = sh.settings()
        async with (
            sh.api_server(settings, pool) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            session = {
                "id": "cs_test_b",
                "object": "checkout.session",
                "customer": "cus_B1",
                "subscription": "sub_B1",
                "client_reference_id": str(cid),
            }
            await sh.deliver(http, sh.event("checkout.session.completed", session, sh.T0))

            async def deliver(i: int) -> None:
                sub = sh.subscription("sub_B1", "cus_B1", "active", tier="enterprise")
                r = await sh.deliver(
                    http, sh.event("customer.subscription.updated", sub, sh.T0 + i)
                )
                assert r.status_code == 200, r.text

            hook_lat, hook_wall = await timed(deliver, events, 8)
            key = (await http.post("/api/v1/payments/claim", json={"claim_secret": claim})).json()[
                "api_key"
            ]
        await pool.execute(
            "UPDATE stripe_tiers SET monthly_quota = 100000000, rate_per_minute = 100000000"
        )

        async def meter(_: int) -> None:
            async with pool.acquire() as conn:
                check = await entitlements.consume_subscriber_key(conn, key, 1, "/bench")
            assert check.ok, check

        meter_lat, meter_wall = await timed(meter, calls, concurrency)
        used = await pool.fetchval("SELECT used FROM subscriber_keys")
        assert used == calls, (used, calls)  # exact under concurrency
        return {
            "bench": "stripe",
            "webhook": figures(hook_lat, hook_wall),
            "metering": figures(meter_lat, meter_wall),
            "events": events,
            "calls": calls,
            "concurrency": concurrency,
        }
    finally:
        await pool.close()


async def main(args: argparse.Namespace) -> None:
    admin = os.environ.get("DATABASE_URL")
    embedded = None
    if admin is None:
        embedded = db.EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="bench_stripe_")))
        admin = embedded.start()
    name = f"bench_stripe_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = with_database(admin, name)
    try:
        mig = await asyncpg.connect(dsn)
        await db.migrate(mig)
        await mig.close()
        print(json.dumps(await bench(dsn, args.events, args.calls, args.concurrency)))
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main(parser.parse_args()))
