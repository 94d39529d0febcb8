"""The delivery worker: every daemon runs one; any number share one database.

One pass:

1. cancel due deliveries whose endpoint was disabled or deleted;
2. claim up to the free concurrency slots of due deliveries in ONE statement
   (``FOR UPDATE SKIP LOCKED``: two workers never claim the same row), pushing each
   row's ``next_attempt_at`` past the attempt's timeout plus a margin (the lease: a
   worker killed mid-request leaves the row to be claimed again when it runs out) and
   counting the attempt; the claim commits at once;
3. send each claimed delivery, with no database connection held across the request,
   signed afresh, redirects not followed, at most ``READ_LIMIT`` bytes of the answer
   read;
4. record the attempt and its outcome (``record.Recorder``: outcomes gathered into
   batches, one statement per batch): a 2xx is ``succeeded``; anything else waits its
   step of the retry schedule, or is ``failed`` after the last one; the endpoint's
   failing streak starts or ends, and an endpoint failing longer than
   ``WATCHER_WEBHOOK_DISABLE_AFTER_HOURS`` is disabled with a
   ``webhook_endpoint.disabled`` event written in one transaction.

The worker wakes on NOTIFY ``watcher_events`` (written by ``emit_events`` at commit),
when a slot frees up, when the soonest retry falls due, and every ``POLL_SECONDS``
regardless (a lost LISTEN connection delays deliveries, it does not lose them).
At-least-once: a receiver may see an event twice (a crash after its answer, before
the record: at most a batch of outcomes), never zero times while the endpoint is
enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import structlog

from watcher import __version__, db, events, metrics
from watcher.settings import Settings
from watcher.webhooks import netguard, payload, record, schedule, signing

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
LEASE_MARGIN_SECONDS = 5.0  # beyond the timeout: the record step's own time
READ_LIMIT = 64 * 1024  # bytes of an answer read at most
SNIPPET_CHARS = 1024  # of which this many are kept in webhook_attempts
GAUGE_SECONDS = 5.0
STOP_GRACE_SECONDS = 5.0
CANCELLED_REASON = record.CANCELLED_REASON
STRICT = netguard.Policy(production=True)
USER_AGENT = f"usdc-watcher/{__version__}"
ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *db.TRANSIENT_ERRORS)


@dataclass(frozen=True)
class Config:
    """What the worker reads from the settings."""

    schedule: schedule.Schedule
    timeout: float = 10.0
    disable_after_hours: float = 120.0
    concurrency: int = 32
    # Where deliveries may go; unsaid, production's (public addresses only).
    policy: netguard.Policy = STRICT

    # Slots one endpoint may hold at once: a receiver that answers only at the timeout
    # holds each of its slots that long, and must not hold them all.
    per_endpoint_limit: int = 8

    @property
    def per_endpoint(self) -> int:
        return max(1, min(self.per_endpoint_limit, self.concurrency))

    @classmethod
    def from_settings(cls, settings: Settings) -> Config:
        return cls(
            schedule=settings.webhook_schedule(),
            timeout=settings.watcher_webhook_timeout_seconds,
            disable_after_hours=settings.watcher_webhook_disable_after_hours,
            concurrency=settings.watcher_webhook_concurrency,
            per_endpoint_limit=settings.watcher_webhook_concurrency_per_endpoint,
            policy=netguard.policy(settings),
        )


def worker_id() -> str:
    """host:pid:random, so two processes (or two runs of one pid) never share a name."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def http_client(config: Config) -> httpx.AsyncClient:
    """The client every attempt goes through: netguard's (every address judged, the judged
    one dialled, redirects never followed: a 3xx is an answer, and a failure)."""
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=64)
    return netguard.client(config.policy, timeout=config.timeout, limits=limits)


@dataclass
class Worker:
    """One delivery loop; :meth:`run` until ``stop`` (or, in burst mode, until drained)."""

    pool: db.Pool
    config: Config
    client_factory: Callable[[Config], httpx.AsyncClient] = http_client
    name: str = field(default_factory=worker_id)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)
    _by_endpoint: dict[str, int] = field(default_factory=dict)  # attempts in flight
    _recorder: record.Recorder = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        self._recorder = record.Recorder(
            self.pool, self.name, cfg.schedule, cfg.disable_after_hours
        )

    async def run(self, stop: asyncio.Event, *, burst: bool = False) -> None:
        """Deliver until ``stop`` is set; ``burst``: return once nothing is due or in flight."""
        log.info("webhook_worker_started", worker=self.name, burst=burst)
        async with self.client_factory(self.config) as client, self._listening():
            gauges_at = 0.0
            while not stop.is_set():
                if time.monotonic() - gauges_at >= GAUGE_SECONDS:
                    gauges_at = time.monotonic()
                    await self._housekeeping()
                self._wake.clear()  # before looking: a wake-up from here on is not lost
                claimed = await self._pass(client)
                if burst and not claimed and not self._inflight:
                    break
                if claimed and len(self._inflight) < self.config.concurrency:
                    continue  # a full batch: there may be more due
                # With an endpoint at its share, what is due may be its: wait for a slot.
                await self._idle(stop, look_ahead=not claimed and not self._full())
            await self._finish()
        log.info("webhook_worker_stopped", worker=self.name)

    async def _pass(self, client: httpx.AsyncClient) -> int:
        free = self.config.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        try:
            lease = self.config.timeout + LEASE_MARGIN_SECONDS
            rows = await self.pool.fetch(
                db.q("webhook_claim"), free, lease, self._full(), self.config.per_endpoint
            )
        except ERRORS as exc:  # the database is away: the next pass tries again
            log.warning("webhook_claim_failed", error=type(exc).__name__)
            return 0
        for row in rows:
            endpoint = str(row["endpoint_id"])
            self._by_endpoint[endpoint] = self._by_endpoint.get(endpoint, 0) + 1
            task = asyncio.create_task(self._deliver(client, dict(row)))
            self._inflight.add(task)
            task.add_done_callback(functools.partial(self._done, endpoint))
        return len(rows)

    def _full(self) -> list[str]:
        """The endpoints holding their share of the slots (claimed for none now)."""
        return [e for e, n in self._by_endpoint.items() if n >= self.config.per_endpoint]

    def _done(self, endpoint: str, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        held = self._by_endpoint.pop(endpoint, 1) - 1
        if held > 0:
            self._by_endpoint[endpoint] = held
        # Claim again once half the slots are free: one claim per batch, not per delivery;
        # or when an endpoint at its share got a slot back (its due rows were left).
        if len(self._inflight) <= self.config.concurrency // 2 or (
            held == self.config.per_endpoint - 1
        ):
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook_delivery_crashed", error=repr(task.exception()))

    async def _idle(self, stop: asyncio.Event, *, look_ahead: bool) -> None:
        """Sleep until woken: NOTIFY, freed slots, the soonest retry (``look_ahead``: when
        nothing was due), or the poll period."""
        wait = POLL_SECONDS
        if look_ahead:
            with contextlib.suppress(*ERRORS):
                due = await self.pool.fetchval(db.q("webhook_next_due"))
                if due is not None:
                    wait = min(wait, max(float(due), 0.0))
        if wait <= 0:
            return
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _finish(self) -> None:
        """Let the attempts in flight finish (their lease covers a cancelled one), then
        write down every outcome handed over."""
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=STOP_GRACE_SECONDS)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_SECONDS):
                await self._recorder.drain()

    @contextlib.asynccontextmanager
    async def _listening(self) -> Any:
        """LISTEN on the events channel while the worker runs (best effort: polls anyway)."""
        conn: Any = None
        try:
            conn = await self.pool.acquire()
            await conn.add_listener(events.CHANNEL, self._notified)
        except ERRORS as exc:
            log.warning("webhook_listen_failed", error=type(exc).__name__)
        try:
            yield
        finally:
            if conn is not None:
                with contextlib.suppress(*ERRORS):
                    await conn.remove_listener(events.CHANNEL, self._notified)
                with contextlib.suppress(*ERRORS):
                    await self.pool.release(conn)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _housekeeping(self) -> None:
        """Cancel what a disabled or deleted endpoint will not get; refresh the gauges."""
        with contextlib.suppress(*ERRORS):
            await self.pool.execute(db.q("webhook_cancel_unsendable"), CANCELLED_REASON)
            row = await self.pool.fetchrow(db.q("webhook_gauges"))
            if row is not None:
                metrics.WEBHOOK_PENDING.set(row["pending"])
                metrics.WEBHOOK_ENDPOINTS_FAILING.set(row["failing"])

    async def _deliver(self, client: httpx.AsyncClient, row: Mapping[str, Any]) -> None:
        outcome = await send(client, row, self.config.timeout)
        metrics.WEBHOOK_ATTEMPTS.labels(outcome=outcome.label).inc()
        await self._recorder.record(row, outcome)
        if outcome.ok:
            age = (datetime.now(UTC) - row["created_at"]).total_seconds()
            metrics.WEBHOOK_DELIVERY_LATENCY.observe(max(age, 0.0))


async def send(client: httpx.AsyncClient, row: Mapping[str, Any], limit: float) -> record.Outcome:
    """One signed attempt of one delivery, given ``limit`` seconds in all (connect, send,
    answer); never raises for what the receiver does."""
    body = payload.body(row)
    started = datetime.now(UTC)
    keys = [k for k in (row["secret"], row["previous_secret"]) if k]
    headers = {
        **signing.headers(events.public_id(int(row["id"])), body, keys, started),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    t0 = time.monotonic()
    out = record.Outcome(started_at=started, duration_ms=0)
    try:
        async with asyncio.timeout(limit):
            async with client.stream("POST", row["url"], content=body, headers=headers) as resp:
                out.status = resp.status_code
                out.snippet = snippet(await netguard.read_capped(resp, READ_LIMIT))
    except TimeoutError:
        out.error = "timeout"
    except netguard.Refused as exc:  # the URL, or an address it resolved to, is not allowed
        out.error = f"refused: {exc.reason}"[:500]
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:500]
    except OSError as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:500]
    out.duration_ms = int((time.monotonic() - t0) * 1000)
    return out


def snippet(raw: bytes) -> str | None:
    """The start of an answer as text fit for the attempts table (no NUL, ≤1 KiB chars)."""
    if not raw:
        return None
    return raw.decode("utf-8", "replace").replace("\x00", "")[:SNIPPET_CHARS]
