"""Leader election on a real PostgreSQL: one follower per chain, takeover, lost locks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from prometheus_client import REGISTRY

from watcher import db, leader

POLL = 0.1


class Recorder:
    """A trivial follower: notes when it runs, and how it ended."""

    def __init__(self, name: str, log: list[str], crash: bool = False) -> None:
        self.name, self.log, self.crash = name, log, crash

    async def __call__(self, stop: asyncio.Event) -> None:
        self.log.append(f"{self.name} started")
        try:
            if self.crash:
                raise ValueError("follower bug")
            await stop.wait()
            self.log.append(f"{self.name} stopped")
        except asyncio.CancelledError:
            self.log.append(f"{self.name} cancelled")
            raise


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _running(chain: str) -> float | None:
    return REGISTRY.get_sample_value("watcher_follower_running", {"chain": chain})


async def _holder(dsn: str, chain: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchrow(db.q("leader_lock_holder"), leader.lock_key(chain))
    finally:
        await conn.close()


async def test_one_leader_and_the_standby_takes_over_when_it_stops(database_url: str) -> None:
    events: list[str] = []
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(
        leader.lead("base", Recorder("A", events), database_url, stop_a, poll=POLL)
    )

    async def a_runs() -> bool:
        return events == ["A started"]

    await _until(a_runs)
    assert _running("base") == 1
    b = asyncio.create_task(
        leader.lead("base", Recorder("B", events), database_url, stop_b, poll=POLL)
    )
    await asyncio.sleep(POLL * 5)  # B polls several times while A holds the lock
    assert events == ["A started"]
    holder = await _holder(database_url, "base")
    assert holder is not None and holder["application_name"].startswith("usdc-watcher leader base")

    stop_a.set()
    await asyncio.wait_for(a, 10)

    async def b_runs() -> bool:
        return events[-1:] == ["B started"]

    await _until(b_runs)
    assert events == ["A started", "A stopped", "B started"]
    stop_b.set()
    await asyncio.wait_for(b, 10)
    assert events[-1] == "B stopped"
    assert _running("base") == 0
    assert await _holder(database_url, "base") is None


async def test_chains_have_separate_locks(database_url: str) -> None:
    events: list[str] = []
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(leader.lead(c, Recorder(c, events), database_url, stop, poll=POLL))
        for c in ("base", "ethereum", "solana")
    ]

    async def all_run() -> bool:
        return len(events) == 3

    await _until(all_run)
    assert sorted(events) == ["base started", "ethereum started", "solana started"]
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)


async def test_losing_the_lock_connection_stops_the_follower_at_once(database_url: str) -> None:
    events: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(
        leader.lead("solana", Recorder("A", events), database_url, stop, poll=POLL)
    )

    async def runs() -> bool:
        return events.count("A started") == 1

    await _until(runs)
    holder = await _holder(database_url, "solana")
    assert holder is not None
    admin = await asyncpg.connect(database_url)
    try:
        # What a DBA's kill, a failover or a network cut does to the session.
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", holder["pid"])
    finally:
        await admin.close()

    async def cancelled_then_back() -> bool:
        return events.count("A started") == 2

    await _until(cancelled_then_back)
    assert events == ["A started", "A cancelled", "A started"]
    new_holder = await _holder(database_url, "solana")
    assert new_holder is not None and new_holder["pid"] != holder["pid"]
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_crashing_follower_raises_and_frees_the_lock(database_url: str) -> None:
    events: list[str] = []
    with pytest.raises(ValueError, match="follower bug"):
        await asyncio.wait_for(
            leader.lead("base", Recorder("A", events, crash=True), database_url, asyncio.Event()),
            10,
        )
    assert events == ["A started"]
    assert _running("base") == 0
    assert await _holder(database_url, "base") is None


async def test_unreachable_database_keeps_standing_by_until_stop() -> None:
    events: list[str] = []
    stop = asyncio.Event()
    dsn = "postgresql://nobody@127.0.0.1:1/none"
    task = asyncio.create_task(leader.lead("base", Recorder("A", events), dsn, stop, poll=POLL))
    await asyncio.sleep(POLL * 3)
    assert not task.done() and events == []
    stop.set()
    await asyncio.wait_for(task, 10)
    assert events == []
