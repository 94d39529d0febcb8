"""One active follower per chain across processes: a Postgres advisory lock per chain.

Each chain's follower runs only while this process holds the chain's
session-level advisory lock, taken on a *dedicated* connection (not from the
pool: a pooled connection is reset and shared, and the lock must live exactly
as long as the session we watch). Other processes stand by, retrying
``pg_try_advisory_lock`` every ``poll`` seconds; when the leader's session ends
(process killed, host gone, connection cut) PostgreSQL releases the lock and a
standby takes over within about one poll.

Losing the lock connection stops the follower at once (cancelled, its open
transaction rolls back): another process may already hold the lock. The ledger's
``ON CONFLICT`` keys make an overlap harmless for money, but we do not rely on it.

Lifecycle of :func:`lead` (one per chain)::

    connect ──► try lock ──no──► wait poll ──┐
       ▲            │yes                     │
       │            ▼                        │
       │      run follower ◄── ping every poll on the lock connection
       │            │ connection lost ──► cancel follower ──┐
       └────────────┴───────────────────────────────────────┘
    stop set: follower finishes its step, lock released, connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from watcher import db, errors, metrics, progress

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_RETRY_SECONDS = 10.0

FollowerRun = Callable[[asyncio.Event], Awaitable[None]]


def lock_key(chain: str) -> int:
    """The chain's advisory lock key: a stable signed 64-bit number derived from its name."""
    digest = hashlib.sha256(f"usdc-watcher/follower/{chain}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _connect(dsn: str, chain: str) -> asyncpg.Connection[asyncpg.Record]:
    name = f"usdc-watcher leader {chain} pid={os.getpid()}"
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
        dsn, timeout=CONNECT_TIMEOUT_SECONDS, server_settings={"application_name": name}
    )
    return conn


async def lead(
    chain: str, run: FollowerRun, dsn: str, stop: asyncio.Event, *, poll: float = POLL_SECONDS
) -> None:
    """Run ``run(stop)`` only while holding ``chain``'s lock; stand by otherwise until ``stop``.

    A follower that raises ends this call with its exception (the daemon then
    exits non-zero). A lost lock connection never does: we reconnect and stand by.
    """
    key = lock_key(chain)
    metrics.FOLLOWER_RUNNING.labels(chain=chain).set(0)
    progress.forget(chain)  # readiness counts only steps taken after this start
    failures = 0
    try:
        while not stop.is_set():
            try:
                conn = await _connect(dsn, chain)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failures += 1
                log.warning("leader_connect_failed", chain=chain, error=str(exc), attempt=failures)
                # The database is down for everyone: back off instead of hammering it.
                await _sleep(stop, min(poll * 2 ** min(failures - 1, 6), MAX_RETRY_SECONDS))
                continue
            failures = 0
            try:
                finished = await _hold_and_run(chain, run, conn, key, stop, poll)
            finally:
                await _close(conn, key)
            if finished:
                return
    finally:
        metrics.FOLLOWER_RUNNING.labels(chain=chain).set(0)
        progress.forget(chain)


async def _hold_and_run(
    chain: str,
    run: FollowerRun,
    conn: asyncpg.Connection[asyncpg.Record],
    key: int,
    stop: asyncio.Event,
    poll: float,
) -> bool:
    """Stand by until the lock is ours, then run the follower; True once it has finished."""
    try:
        while not stop.is_set():
            async with asyncio.timeout(poll + CONNECT_TIMEOUT_SECONDS):
                got = await conn.fetchval(db.q("try_leader_lock"), key)
            if got:
                break
            progress.beat(chain)  # a standby that can poll is healthy
            await _sleep(stop, poll)
        else:
            return True
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("leader_standby_connection_lost", chain=chain, error=str(exc))
        await _sleep(stop, poll)
        return False
    log.info("leader_acquired", chain=chain, pid=os.getpid())
    metrics.FOLLOWER_RUNNING.labels(chain=chain).set(1)
    try:
        await _run_while_held(chain, run, conn, stop, poll)
    except errors.LockLost as exc:
        log.error("leader_lock_lost", chain=chain, error=str(exc))
        await _sleep(stop, poll)
        return False
    finally:
        metrics.FOLLOWER_RUNNING.labels(chain=chain).set(0)
    log.info("leader_released", chain=chain)
    return True


async def _run_while_held(
    chain: str,
    run: FollowerRun,
    conn: asyncpg.Connection[asyncpg.Record],
    stop: asyncio.Event,
    poll: float,
) -> None:
    """The follower and a watch on the lock connection; whichever ends first decides."""
    lost = asyncio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())

    async def follow() -> None:
        await run(stop)

    follower = asyncio.create_task(follow(), name=f"follower:{chain}")
    watch = asyncio.create_task(_watch(conn, lost, poll), name=f"leader-watch:{chain}")
    try:
        await asyncio.wait({follower, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not follower.done():
            follower.cancel()  # the lock is gone: not one more step
        await asyncio.wait({follower})
    finally:
        if not follower.done():  # we are cancelled ourselves (grace period over)
            follower.cancel()
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
    if follower.cancelled():
        raise errors.LockLost(f"{chain}: leader lock connection lost")
    follower.result()  # re-raise a crash


async def _watch(
    conn: asyncpg.Connection[asyncpg.Record], lost: asyncio.Event, poll: float
) -> None:
    """Returns when the lock connection is gone (closed, unresponsive or erroring)."""
    while not lost.is_set():
        try:
            async with asyncio.timeout(poll + CONNECT_TIMEOUT_SECONDS):
                await conn.fetchval(db.q("leader_ping"))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll):
                await lost.wait()


async def _close(conn: asyncpg.Connection[asyncpg.Record], key: int) -> None:
    """Unlock and close; if the connection is broken, terminate (the server frees the lock)."""
    try:
        async with asyncio.timeout(2):
            if not conn.is_closed():
                await conn.execute(db.q("leader_unlock"), key)
                await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
