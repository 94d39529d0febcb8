"""Writing attempts down: outcomes gathered into batches, one statement per batch.

A delivery's attempt is made, then its outcome handed to the :class:`Recorder`, which
writes whatever has gathered in one statement (``webhook_record_batch``: the attempt
rows, each delivery's new state while its lease is still that attempt's, the
endpoints' failing streaks) and then wakes every delivery of the batch. While one
batch is written the next gathers, so under load a round trip carries dozens of
outcomes and when idle an outcome is written at once (no timer to wait for).

What a crash costs: the outcomes not yet written, i.e. at most a batch's attempts
made again once their lease runs out (at-least-once allows it); an attempt is never
recorded twice (UNIQUE (delivery, attempt); a second record is refused and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import structlog

from watcher import db, events
from watcher.webhooks import payload, schedule

log = structlog.get_logger(__name__)

BATCH_MAX = 256  # outcomes per statement at most
PAUSES = (0.0, 0.5, 2.0)  # the database may blink; the lease covers a batch lost
CANCELLED_REASON = "endpoint disabled or deleted"
DISABLED_REASON = "failing for more than {hours:g} hours"
ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *db.TRANSIENT_ERRORS)


@dataclass
class Outcome:
    """What one attempt got back."""

    started_at: datetime
    duration_ms: int
    status: int | None = None
    error: str | None = None
    snippet: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def label(self) -> str:
        """The metric's outcome: succeeded, http_status, timeout, network."""
        if self.ok:
            return "succeeded"
        if self.status is not None:
            return "http_status"
        return "timeout" if self.error == "timeout" else "network"


_Item = tuple[Mapping[str, Any], Outcome, "asyncio.Future[None]"]


class Recorder:
    """Gathers outcomes and writes them in batches, one batch at a time, in order."""

    def __init__(
        self, pool: db.Pool, worker: str, retry: schedule.Schedule, disable_after_hours: float
    ) -> None:
        self._pool = pool
        self._worker = worker
        self._schedule = retry
        self._hours = disable_after_hours
        self._waiting: list[_Item] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, row: Mapping[str, Any], outcome: Outcome) -> None:
        """Hand over one attempt's outcome; returns once its batch was written (or given
        up on: then the lease makes the attempt again)."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((row, outcome, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        await asyncio.shield(done)

    async def drain(self) -> None:
        """Until every outcome handed over is written (or given up on)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:BATCH_MAX], self._waiting[BATCH_MAX:]
            try:
                await self._write(batch)
            finally:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _write(self, batch: list[_Item]) -> None:
        args = self._arrays(batch)
        rows: list[asyncpg.Record] | None = None
        for pause in PAUSES:
            await asyncio.sleep(pause)
            try:
                rows = await self._pool.fetch(db.q("webhook_record_batch"), *args, self._worker)
                break
            except ERRORS as exc:
                log.warning("webhook_record_failed", error=type(exc).__name__, outcomes=len(batch))
        if rows is None:
            return
        for r in rows:
            if r["kind"] == "duplicate":
                log.error("webhook_attempt_recorded_twice", delivery=r["delivery_id"])
            elif r["failing_since"] is not None:
                await self._maybe_disable(r["endpoint_id"], r["failing_since"])

    def _arrays(self, batch: list[_Item]) -> list[list[Any]]:
        cols: list[list[Any]] = [[] for _ in range(10)]
        for row, o, _ in batch:
            attempt = row["attempt"]
            delay = None if o.ok else schedule.delay_after(self._schedule, attempt)
            values = (
                row["delivery_id"], attempt, o.started_at, o.duration_ms, o.status,
                o.error, o.snippet, delay, row["endpoint_id"], o.ok,
            )  # fmt: skip
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        return cols

    async def _maybe_disable(self, endpoint: str, since: datetime) -> None:
        if (datetime.now(UTC) - since).total_seconds() <= self._hours * 3600:
            return
        with contextlib.suppress(*ERRORS):
            async with self._pool.acquire() as conn, conn.transaction():
                await disable_if_failing_too_long(conn, endpoint, self._hours)


async def disable_if_failing_too_long(conn: db.Connection, endpoint: str, hours: float) -> bool:
    """Disable ``endpoint`` if its failing streak is older than ``hours``: its pending
    deliveries are cancelled and a ``webhook_endpoint.disabled`` event is written, all in
    the caller's transaction. True if it was disabled now."""
    reason = DISABLED_REASON.format(hours=hours)
    row = await conn.fetchrow(db.q("webhook_endpoint_disable"), endpoint, hours * 3600.0, reason)
    if row is None:
        return False
    await conn.execute(db.q("webhook_cancel_endpoint"), endpoint, CANCELLED_REASON)
    await events.emit(
        conn,
        "webhook_endpoint.disabled",
        endpoint,
        {
            "url": origin(row["url"]),
            "description": row["description"],
            "events": list(row["event_types"]),
            "enabled": False,
            "failing_since": payload.timestamp(row["failing_since"]),
            "disabled_at": payload.timestamp(row["disabled_at"]),
            "disabled_reason": row["disabled_reason"],
        },
    )
    log.warning("webhook_endpoint_disabled", endpoint=endpoint, reason=reason)
    return True


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what an event may say of an endpoint. Its path
    and query can be the receiver's credential (Slack's, Zapier's hooks), and events go
    to other endpoints and to read-only feed keys."""
    u = httpx.URL(url)
    return str(u.copy_with(raw_path=b"", fragment=None)).rstrip("/")
