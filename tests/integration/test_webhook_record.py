"""Attempts written down in batches (watcher/webhooks/record.py) on a real PostgreSQL:
one statement for many outcomes, each delivery changed only while its lease is that
attempt's, the failing streak in the order the outcomes came, an attempt never
recorded twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from structlog.testing import capture_logs

from watcher import db, events
from watcher.webhooks import record, schedule, signing

RETRY = schedule.parse("1h,2h")


async def claimed(pool: db.Pool, n: int) -> tuple[str, list[dict[str, Any]]]:
    """An endpoint, ``n`` events for it, and their deliveries claimed (attempt 1)."""
    endpoint: str = await pool.fetchval(
        "INSERT INTO webhook_endpoints (url, event_types, secret) "
        "VALUES ('http://127.0.0.1:9/hook', '{*}', $1) RETURNING id",
        signing.new_secret(),
    )
    async with pool.acquire() as conn:
        for i in range(n):
            await events.emit(conn, "subscription.activated", f"sub_{i}", {"tier": "pro"})
    rows = await pool.fetch(db.q("webhook_claim"), n, 60.0, [], n)  # no endpoint full, share n
    assert len(rows) == n
    return endpoint, [dict(r) for r in rows]


def ok(status: int = 204) -> record.Outcome:
    return record.Outcome(started_at=datetime.now(UTC), duration_ms=3, status=status)


def failed(error: str = "timeout") -> record.Outcome:
    return record.Outcome(started_at=datetime.now(UTC), duration_ms=7, error=error)


async def deliveries(pool: db.Pool) -> dict[int, dict[str, Any]]:
    rows = await pool.fetch("SELECT * FROM webhook_deliveries ORDER BY id")
    return {r["id"]: dict(r) for r in rows}


async def failing_since(pool: db.Pool, endpoint: str) -> datetime | None:
    at: datetime | None = await pool.fetchval(
        "SELECT failing_since FROM webhook_endpoints WHERE id = $1", endpoint
    )
    return at


async def test_outcomes_handed_over_together_are_written_by_one_statement(
    pool: db.Pool,
) -> None:
    endpoint, rows = await claimed(pool, 40)
    rec = record.Recorder(pool, "w1", RETRY, 120)
    outcomes = [ok() if i % 4 else failed() for i in range(len(rows))]
    await asyncio.gather(*(rec.record(r, o) for r, o in zip(rows, outcomes, strict=True)))
    got = await deliveries(pool)
    for r, o in zip(rows, outcomes, strict=True):
        d = got[r["delivery_id"]]
        if o.ok:
            assert d["status"] == "succeeded" and d["delivered_at"] is not None
            assert d["last_status"] == 204 and d["last_error"] is None
        else:
            assert d["status"] == "pending" and d["last_error"] == "timeout"
            # the next attempt waits the schedule's first step (1 h), not the lease
            wait = await pool.fetchval(
                "SELECT extract(epoch FROM next_attempt_at - now()) FROM webhook_deliveries "
                "WHERE id = $1",
                r["delivery_id"],
            )
            assert 3500 < wait <= 3600
    attempts = await pool.fetch("SELECT * FROM webhook_attempts ORDER BY delivery_id")
    assert len(attempts) == 40 and {a["worker"] for a in attempts} == {"w1"}
    assert {a["attempt"] for a in attempts} == {1}
    # One statement, so one transaction wrote them all.
    assert await pool.fetchval("SELECT count(DISTINCT xmin::text) FROM webhook_attempts") == 1
    # The last outcome handed over (a success) ended the streak.
    assert await failing_since(pool, endpoint) is None


async def test_the_streak_follows_the_order_of_the_outcomes(pool: db.Pool) -> None:
    endpoint, rows = await claimed(pool, 4)
    rec = record.Recorder(pool, "w1", RETRY, 120)
    await asyncio.gather(rec.record(rows[0], ok()), rec.record(rows[1], failed()))
    started = await failing_since(pool, endpoint)
    assert started is not None  # a failure after a success: a streak begins
    await asyncio.gather(rec.record(rows[2], failed()), rec.record(rows[3], ok()))
    assert await failing_since(pool, endpoint) is None  # ... and a later success ends it


async def test_an_outcome_whose_lease_was_lost_is_recorded_but_changes_nothing(
    pool: db.Pool,
) -> None:
    _, (row,) = await claimed(pool, 1)
    # The lease ran out and another worker claimed attempt 2 meanwhile.
    await pool.execute(
        "UPDATE webhook_deliveries SET attempts = 2 WHERE id = $1", row["delivery_id"]
    )
    rec = record.Recorder(pool, "w1", RETRY, 120)
    await rec.record(row, ok())
    d = (await deliveries(pool))[row["delivery_id"]]
    assert d["status"] == "pending" and d["delivered_at"] is None
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempts") == 1


async def test_an_attempt_recorded_twice_is_refused_and_said(pool: db.Pool) -> None:
    _, (first, second) = await claimed(pool, 2)
    rec = record.Recorder(pool, "w1", RETRY, 120)
    await rec.record(first, failed("boom"))
    with capture_logs() as logs:
        await asyncio.gather(rec.record(first, ok()), rec.record(second, ok()))
    got = await deliveries(pool)
    assert got[first["delivery_id"]]["status"] == "pending"  # the second record changed nothing
    assert got[first["delivery_id"]]["last_error"] == "boom"
    assert got[second["delivery_id"]]["status"] == "succeeded"  # the rest of the batch did
    assert [e["delivery"] for e in logs if e["event"] == "webhook_attempt_recorded_twice"] == [
        first["delivery_id"]
    ]
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempts") == 2


async def test_the_last_step_fails_the_delivery(pool: db.Pool) -> None:
    _, (row,) = await claimed(pool, 1)
    await pool.execute(
        "UPDATE webhook_deliveries SET attempts = 3 WHERE id = $1", row["delivery_id"]
    )
    rec = record.Recorder(pool, "w1", RETRY, 120)
    await rec.record({**row, "attempt": 3}, failed())  # 1h, 2h: the third was the last
    d = (await deliveries(pool))[row["delivery_id"]]
    assert d["status"] == "failed" and d["last_error"] == "timeout"
