"""Webhook delivery with a real receiver on 127.0.0.1 verifying every request with the
``standardwebhooks`` package: payments credited on anvil by the follower, an endpoint
inserted in SQL, a receiver that fails, times out, redirects, answers 500 and goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from devkit.anvil import Anvil, Token
from devkit.evmkit import drain, evm_chain, follower
from devkit.webhook_receiver import Answer, Receiver
from watcher import db, events
from watcher.webhooks import netguard, signing, worker

PAYMENTS = 1000
PER_TX = 100
TIMEOUT = 0.5
DEV = netguard.Policy(production=False)  # development: loopback may be reached
FAST = "0.05s,0.1s,0.2s,0.5s,1s,1s,2s,2s,2s,2s,2s,2s"  # 15 s in all


async def add_endpoint(
    pool: db.Pool, url: str, types: list[str], secret: str | None = None, **cols: Any
) -> tuple[str, str]:
    """An endpoint written straight in SQL (the admin API is not this test's subject)."""
    secret = secret or signing.new_secret()
    names = ["url", "event_types", "secret", *cols]
    sql = (
        f"INSERT INTO webhook_endpoints ({', '.join(names)}) "
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))}) RETURNING id"
    )
    endpoint: str = await pool.fetchval(sql, url, types, secret, *cols.values())
    return endpoint, secret


async def pay(anvil: Anvil, usdc: Token, us: str, n: int) -> None:
    payer = anvil.accounts[1]
    for start in range(0, n, PER_TX):
        k = min(PER_TX, n - start)
        await usdc.batch_transfer(payer, [us] * k, [200_000 + start + j for j in range(k)])
    await anvil.mine(4)


async def event_ids(pool: db.Pool, type_: str = "payment.credited") -> set[str]:
    rows = await pool.fetch("SELECT id FROM events WHERE type = $1", type_)
    return {events.public_id(r["id"]) for r in rows}


async def wait_settled(pool: db.Pool, want: int, seconds: float) -> None:
    """Until ``want`` deliveries exist and none is pending (bounded)."""
    deadline = time.monotonic() + seconds
    while True:
        row = await pool.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'pending') AS pending "
            "FROM webhook_deliveries"
        )
        assert row is not None
        if row["n"] >= want and row["pending"] == 0:
            return
        assert time.monotonic() < deadline, f"not delivered in time: {dict(row)}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(pool: db.Pool, cfg: worker.Config) -> AsyncIterator[worker.Worker]:
    w = worker.Worker(pool, cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        yield w
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def flaky(id_: str, n: int) -> Answer:
    """First attempts fail in every way a receiver fails; later ones succeed."""
    k = int(id_.removeprefix("evt_"))
    if n == 1 and k % 4 == 0:
        return Answer(500, body=b"x" * 100_000)  # a big error page: read capped, stored 1 KiB
    if n == 1 and k % 4 == 1:
        return Answer(200, delay=TIMEOUT + 0.3)  # answers too late: a timeout
    if n == 1 and k % 4 == 2:
        return Answer(302, headers=((b"location", b"http://127.0.0.1:1/elsewhere"),))
    if n == 2 and k % 8 == 0:
        return Answer(503)
    return Answer(204)


async def test_a_thousand_credits_each_delivered_and_verified_through_every_failure(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    us = anvil.accounts[7]
    receiver = Receiver(secrets=[], behave=flaky)
    endpoint, secret = await add_endpoint(pool, receiver.url, ["payment.credited"])
    other, _ = await add_endpoint(pool, receiver.url, ["invoice.expired"])  # wants none of it
    receiver.secrets = [secret]
    await pay(anvil, usdc, us, PAYMENTS)
    cfg = worker.Config(
        schedule=worker.schedule.parse(FAST), timeout=TIMEOUT, concurrency=16, policy=DEV
    )
    async with running(pool, cfg):
        # The receiver is away while the first deliveries go out, then comes back.
        async with follower(evm_chain(anvil, usdc, [us]), pool) as f:
            await drain(f)
        await asyncio.sleep(1.0)
        await receiver.start()
        try:
            await wait_settled(pool, PAYMENTS, 90)
        finally:
            await receiver.stop()
    want = await event_ids(pool)
    assert len(want) == PAYMENTS
    assert receiver.ids() == want  # every event arrived, none lost, nothing else
    assert receiver.unverified() == []
    statuses = await pool.fetch(
        "SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status"
    )
    assert {r["status"]: r["n"] for r in statuses} == {"succeeded": PAYMENTS}
    assert not await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", other
    )
    # Every attempt is recorded once; the receiver saw each one the database counts.
    attempts = await pool.fetchval("SELECT sum(attempts) FROM webhook_deliveries")
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempts") == attempts
    got = sum(len(h) for h in receiver.hits.values())
    refused = await pool.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE error LIKE 'ConnectError%'"
    )
    timeouts = await pool.fetchval("SELECT count(*) FROM webhook_attempts WHERE error = 'timeout'")
    # Refused connections never reached it; a timeout may have (its answer came too late)
    # or not (on a loaded machine the request itself can be late).
    assert attempts - refused - timeouts <= got <= attempts - refused
    assert not await pool.fetchval(
        "SELECT count(*) FROM webhook_attempts WHERE error NOT LIKE 'ConnectError%' "
        "AND error <> 'timeout'"
    )  # no other failure: a broken answer would hide a bug
    assert refused > 0  # the receiver really was away
    kinds = await pool.fetch(
        "SELECT status_code, error, length(response_snippet) AS len FROM webhook_attempts"
    )
    assert {r["status_code"] for r in kinds} >= {204, 302, 500, 503}
    assert any(r["error"] == "timeout" for r in kinds)
    assert max(r["len"] or 0 for r in kinds) == 1024
    # The 302 was not followed: the same id came back to the same URL on the next attempt.
    assert all(len(receiver.hits[i]) >= 2 for i in want if int(i[4:]) % 4 == 2)
    bodies = {
        json.loads(h.body)["id"]: json.loads(h.body) for hs in receiver.hits.values() for h in hs
    }
    sample = bodies[min(want)]
    assert sample["type"] == "payment.credited" and sample["data"]["object"] == "payment"
    assert sample["sequence"] == int(sample["id"][4:]) and sample["timestamp"].endswith("Z")
    assert (
        await pool.fetchval("SELECT failing_since FROM webhook_endpoints WHERE id = $1", endpoint)
        is None
    )  # the successes ended the streak


async def test_secret_rotation_both_sign_during_the_grace_then_only_the_new(
    pool: db.Pool,
) -> None:
    old, new = signing.new_secret(), signing.new_secret()
    receiver = Receiver(secrets=[new, old], behave=lambda _i, n: Answer(500 if n == 1 else 200))
    endpoint, _ = await add_endpoint(
        pool, receiver.url, ["*"], new, previous_secret=old,
        previous_secret_until=await pool.fetchval("SELECT now() + interval '1 hour'"),
    )  # fmt: skip
    cfg = worker.Config(schedule=worker.schedule.parse("1.1s"), timeout=2, policy=DEV)
    async with receiver:
        async with pool.acquire() as conn:
            await events.emit(conn, "subscription.activated", "sub_1", {"tier": "pro"})
        async with running(pool, cfg):
            await wait_settled(pool, 1, 20)
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE webhook_endpoints SET previous_secret_until = now() - interval '1 second' "
                "WHERE id = $1",
                endpoint,
            )
            await events.emit(conn, "subscription.cancelled", "sub_1", {"tier": "pro"})
        await worker.Worker(pool, cfg).run(asyncio.Event(), burst=True)
    first, second = sorted(receiver.ids())
    # During the grace period: both signatures, each verified by the package; every
    # attempt signed afresh (the retry carries its own timestamp and signatures).
    a, b = receiver.hits[first]
    assert a.verified == b.verified == [0, 1]
    assert len(a.headers["webhook-signature"].split()) == 2
    assert a.headers["webhook-id"] == b.headers["webhook-id"] == first
    assert int(b.headers["webhook-timestamp"]) > int(a.headers["webhook-timestamp"])
    # After it: the new secret only.
    (c,) = receiver.hits[second]
    assert c.verified == [0] and len(c.headers["webhook-signature"].split()) == 1


async def test_an_endpoint_failing_too_long_is_disabled_with_an_event_and_not_sent_to(
    pool: db.Pool,
) -> None:
    receiver = Receiver(secrets=[], behave=lambda _i, _n: Answer(500))
    ops = Receiver(secrets=[])
    watcher_, key = await add_endpoint(pool, ops.url, ["*"])
    ops.secrets = [key]
    bad, _ = await add_endpoint(pool, receiver.url, ["subscription.activated"])
    gone, _ = await add_endpoint(pool, receiver.url, ["subscription.activated"])
    async with pool.acquire() as conn:
        for i in range(3):
            await events.emit(conn, "subscription.activated", f"sub_{i}", {"tier": "pro"})
        await conn.execute(
            "UPDATE webhook_endpoints SET failing_since = now() - interval '121 hours' "
            "WHERE id = $1",
            bad,
        )
        await conn.execute("UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1", gone)
    cfg = worker.Config(schedule=worker.schedule.parse("1h"), timeout=2, concurrency=1, policy=DEV)
    async with receiver, ops:
        await worker.Worker(pool, cfg).run(asyncio.Event(), burst=True)
    ep = await pool.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", bad)
    assert ep is not None and not ep["enabled"] and ep["disabled_at"] is not None
    assert "120 hours" in ep["disabled_reason"]
    rows = await pool.fetch(
        "SELECT endpoint_id, status, count(*) AS n FROM webhook_deliveries d "
        "JOIN events e ON e.id = d.event_id WHERE e.type = 'subscription.activated' "
        "GROUP BY 1, 2"
    )
    by = {(r["endpoint_id"], r["status"]): r["n"] for r in rows}
    assert by[(bad, "cancelled")] == 3 and by[(gone, "cancelled")] == 3
    # The disabled endpoint got one attempt; the deleted one none.
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
            "ON d.id = a.delivery_id WHERE d.endpoint_id = $1",
            bad,
        )
        == 1
    )
    assert not await pool.fetchval(
        "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d "
        "ON d.id = a.delivery_id WHERE d.endpoint_id = $1",
        gone,
    )
    (disabled,) = await pool.fetch("SELECT * FROM events WHERE type = 'webhook_endpoint.disabled'")
    data = json.loads(disabled["data"])
    origin = receiver.url.removesuffix("/hook")  # the path may be a credential: not shown
    assert disabled["resource_id"] == bad and data["url"] == origin and not data["enabled"]
    # The operator's endpoint ('*') got everything and was told, verified.
    assert len(ops.ids()) == 4 and ops.unverified() == []
    (told,) = [h for hs in ops.hits.values() for h in hs if b"webhook_endpoint" in h.body]
    assert json.loads(told.body)["data"]["id"] == bad
    assert not [h for hs in receiver.hits.values() for h in hs if b"webhook_endpoint" in h.body]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries "
            "WHERE endpoint_id = $1 AND status = 'succeeded'",
            watcher_,
        )
        == 4
    )


async def test_in_production_a_loopback_endpoint_is_refused_by_netguard_and_never_reached(
    pool: db.Pool,
) -> None:
    receiver = Receiver(secrets=[])
    _, key = await add_endpoint(pool, receiver.url, ["*"])
    receiver.secrets = [key]
    async with pool.acquire() as conn:
        await events.emit(conn, "subscription.activated", "sub_1", {"tier": "pro"})
    cfg = worker.Config(schedule=worker.schedule.parse("1h"), timeout=2)  # production policy
    async with receiver:
        await worker.Worker(pool, cfg).run(asyncio.Event(), burst=True)
    assert receiver.hits == {}
    (a,) = await pool.fetch("SELECT * FROM webhook_attempts")
    assert a["error"].startswith("refused:") and a["status_code"] is None
    d = await pool.fetchrow("SELECT * FROM webhook_deliveries")
    assert d is not None and d["status"] == "pending" and d["attempts"] == 1
