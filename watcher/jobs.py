"""Scheduled jobs: what an operator used to cron, run by the daemon on one process.

One advisory lock for all the jobs (:func:`lock_key`), taken on a dedicated
connection as the followers' locks are (``watcher.leader``): the process that holds
it is the jobs leader and runs every enabled job once per interval; the others stand
by and poll. With several daemons on one database each job runs once per period. A
new leader (a start, a failover) runs every job at once: it cannot know when the old
leader last did, and every job is idempotent.

Each run

* has at most ``timeout`` seconds (asyncio, and the server's ``statement_timeout``
  for the SQL jobs); a run cut off rolls its transaction back and counts as
  ``timeout``;
* runs in its own transaction (the Stripe catch-up: one per event, in api/);
* that fails is logged and counted (``failed``) and never stops the daemon; the job
  runs again at its next interval.

Jobs: ``analytics`` (``update_x402_analytics()``), ``cleanup`` (invoice expiry through
the ledger, so each expiry writes its ``invoice.expired`` event; stale rate-limit
windows; expired Idempotency-Keys, as ``POST /x402/cleanup`` does) and
``stripe_sync`` (api/'s reconcile, which watcher/ may not import: the daemon hands
it to :func:`stripe_sync`).

The loop of :meth:`Runner.run`::

    connect ──► try the lock ──no──► wait poll ──┐
        ▲           │yes                         │
        │           ▼                            │
        │     each tick (≤ poll): run the jobs that are due, one at a time; ping the lock
        │           │ lock connection lost ──► stand by ──┘
        └───────────┘
    stop set: the running job finishes (within its timeout), the lock is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from watcher import db, holds, ledger, metrics
from watcher.settings import Settings

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_RETRY_SECONDS = 10.0
OUTCOMES = ("ok", "failed", "timeout")
# The first Stripe catch-up of a process looks back as far as `watcher stripe-sync` does
# by default; later ones from the previous successful run's start, with some overlap
# (an event listed late, clocks apart): an event applied twice is a duplicate, never a
# second change.
STRIPE_FIRST_WINDOW = timedelta(hours=72)
STRIPE_OVERLAP = timedelta(minutes=10)
LOCK_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

JobRun = Callable[[db.Pool], Awaitable[object]]
StripeSync = Callable[[db.Pool, datetime], Awaitable[Mapping[str, int]]]
Step = Callable[[db.Connection], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Job:
    """A scheduled job: its name (the metrics' ``name`` label), seconds between runs
    (0: disabled) and what one run does."""

    name: str
    every: float
    run: JobRun


def lock_key() -> int:
    """The jobs' advisory lock key (a signed 64-bit number; the followers' keys differ)."""
    digest = hashlib.sha256(b"usdc-watcher/scheduled-jobs").digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def transactional(step: Step, timeout: float) -> JobRun:
    """``step`` in a transaction of its own. The runner cancels it after ``timeout``; the
    server stops its statements a second later by itself, should the cancel be lost."""
    server_ms = str(int((timeout + 1) * 1000))

    async def run(pool: db.Pool) -> object:
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval(db.q("job_statement_timeout"), server_ms)
            return await step(conn)

    return run


async def analytics(conn: db.Connection) -> int:
    """The daily roll-up (``x402_analytics``) of yesterday and today; rows written."""
    written: int = await conn.fetchval(db.q("job_update_analytics"))
    return written


async def cleanup(conn: db.Connection) -> dict[str, int]:
    """What ``POST /x402/cleanup`` does: expire stale invoices through the ledger (their
    ``invoice.expired`` events in the same transaction), prune rate-limit windows,
    forget expired Idempotency-Keys (the paywall's and the charge endpoint's); refresh the
    gauge of payments held for review."""
    expired = await ledger.expire_invoices(conn)
    pruned = _count(await conn.execute(db.q("api_rate_prune")))
    forgotten = [
        _count(await conn.execute(db.q(q))) for q in ("api_idem_prune", "gateway_charge_prune")
    ]
    held = await holds.refresh_gauge(conn)  # issue 16: the review queue's gauge
    return {
        "invoices_expired": expired,
        "rate_windows_pruned": pruned,
        "idempotency_keys_forgotten": sum(forgotten),
        "payments_held": held,
    }


def _count(status: str) -> int:
    return int(status.split()[-1])  # "DELETE 3", "UPDATE 0"


def builtin(settings: Settings) -> list[Job]:
    """The jobs watcher/ runs on its own: the analytics roll-up and the cleanup."""
    timeout = settings.watcher_job_timeout_seconds
    return [
        Job("analytics", settings.watcher_job_analytics_seconds, transactional(analytics, timeout)),
        Job("cleanup", settings.watcher_job_cleanup_seconds, transactional(cleanup, timeout)),
    ]


def stripe_sync(every: float, sync: StripeSync) -> Job:
    """The Stripe catch-up as a job: ``sync(pool, since)`` applies Stripe's events since
    then and returns counts by outcome (api/'s reconcile, handed in by the daemon)."""
    last_start: list[datetime] = []

    async def run(pool: db.Pool) -> dict[str, int]:
        started = datetime.now(UTC)
        since = last_start[0] - STRIPE_OVERLAP if last_start else started - STRIPE_FIRST_WINDOW
        counts = dict(await sync(pool, since))
        last_start[:] = [started]
        return counts

    return Job("stripe_sync", every, run)


_exported: set[str] = set()


def _export(jobs: Sequence[Job]) -> None:
    """The jobs' series from the start, on standbys too: the interval, every outcome at
    0, and the last success at this process's start until a run succeeds (so the
    ScheduledJobNotSucceeding alert can fire for a job that never succeeds)."""
    for job in jobs:
        metrics.JOB_INTERVAL.labels(job.name).set(job.every)
        for outcome in OUTCOMES:
            metrics.JOB_RUNS.labels(job.name, outcome)
        if job.name not in _exported:
            _exported.add(job.name)
            metrics.JOB_LAST_SUCCESS.labels(job.name).set(time.time())


class Runner:
    """Runs ``jobs`` on ``pool`` while this process holds the jobs lock (on ``dsn``)."""

    def __init__(
        self,
        jobs: Sequence[Job],
        pool: db.Pool,
        dsn: str,
        *,
        timeout: float,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.jobs = [j for j in jobs if j.every > 0]
        self.pool, self.dsn, self.timeout, self.poll = pool, dsn, timeout, poll
        self._next: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (run the jobs as they fall due) or stand by, until ``stop``. Never raises
        for a job's failure or a lost lock connection."""
        if not self.jobs:  # every interval 0, or `watcher api` (daemon_started lists them)
            return
        _export(self.jobs)
        failures = 0
        while not stop.is_set():
            try:
                conn = await _connect(self.dsn)
            except LOCK_ERRORS as exc:
                failures += 1
                log.warning("jobs_connect_failed", error=str(exc), attempt=failures)
                await _sleep(stop, min(self.poll * 2 ** min(failures - 1, 6), MAX_RETRY_SECONDS))
                continue
            failures = 0
            try:
                await self._hold(conn, stop)
            except LOCK_ERRORS as exc:
                log.warning("jobs_lock_connection_lost", error=str(exc))
                await _sleep(stop, self.poll)
            finally:
                metrics.JOBS_LEADER.set(0)
                await _close(conn)

    async def once(self, *, wait: float = 0.0) -> dict[str, str] | None:
        """Burst mode (tests, by hand): take the lock (waiting up to ``wait`` seconds), run
        every enabled job once, release it. Outcomes by job; None if another process
        held the lock all along."""
        _export(self.jobs)
        conn = await _connect(self.dsn)
        try:
            deadline = time.monotonic() + wait
            while not await conn.fetchval(db.q("try_leader_lock"), lock_key()):
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(min(self.poll, max(deadline - time.monotonic(), 0.01)))
            return {job.name: await self.run_one(job) for job in self.jobs}
        finally:
            await _close(conn)

    async def _hold(self, conn: asyncpg.Connection[asyncpg.Record], stop: asyncio.Event) -> None:
        """Stand by until the lock is ours, then run the due jobs each tick until ``stop``."""
        while not stop.is_set():
            async with asyncio.timeout(self.poll + CONNECT_TIMEOUT_SECONDS):
                if await conn.fetchval(db.q("try_leader_lock"), lock_key()):
                    break
            await _sleep(stop, self.poll)
        else:
            return
        log.info("jobs_leader_acquired", pid=os.getpid(), jobs=[j.name for j in self.jobs])
        metrics.JOBS_LEADER.set(1)
        self._next.clear()  # a new leader runs every job now: it cannot know when they ran
        while not stop.is_set():
            await self._run_due(stop)
            await _sleep(stop, self._until_due())
            async with asyncio.timeout(self.poll + CONNECT_TIMEOUT_SECONDS):
                await conn.fetchval(db.q("leader_ping"))  # still ours? (raises when gone)
        log.info("jobs_leader_released")

    async def _run_due(self, stop: asyncio.Event) -> None:
        for job in self.jobs:
            if stop.is_set():
                return
            now = time.monotonic()
            if self._next.get(job.name, now) <= now:
                # From the start of this run: the period holds however long runs take.
                self._next[job.name] = now + job.every
                await self.run_one(job)

    def _until_due(self) -> float:
        now = time.monotonic()
        soonest = min(self._next.get(j.name, now) for j in self.jobs)
        return max(0.0, min(self.poll, soonest - now))

    async def run_one(self, job: Job) -> str:
        """One run of ``job``, bounded, logged and counted; its outcome (ok, failed, timeout)."""
        started = time.monotonic()
        limit = asyncio.timeout(self.timeout)
        try:
            async with limit:
                result = await job.run(self.pool)
        except Exception as exc:  # a job's failure is its own: the daemon and the others go on
            outcome = "timeout" if limit.expired() else "failed"
            # A bug's traceback says where; a timeout's would only show the cancel.
            log.error(
                "job_failed",
                name=job.name,
                outcome=outcome,
                error=repr(exc),
                seconds=self.timeout if outcome == "timeout" else None,
                exc_info=outcome == "failed",
            )
        else:
            outcome = "ok"
            metrics.JOB_LAST_SUCCESS.labels(job.name).set(time.time())
            log.info("job_done", name=job.name, result=result)
        seconds = time.monotonic() - started
        metrics.JOB_DURATION.labels(job.name).observe(seconds)
        metrics.JOB_RUNS.labels(job.name, outcome).inc()
        return outcome


async def _connect(dsn: str) -> asyncpg.Connection[asyncpg.Record]:
    name = f"usdc-watcher jobs pid={os.getpid()}"
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
        dsn, timeout=CONNECT_TIMEOUT_SECONDS, server_settings={"application_name": name}
    )
    return conn


async def _close(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Unlock and close; a broken connection is terminated (the server frees the lock)."""
    try:
        async with asyncio.timeout(2):
            if not conn.is_closed():
                await conn.execute(db.q("leader_unlock"), lock_key())
                await conn.close()
    except LOCK_ERRORS:
        conn.terminate()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
