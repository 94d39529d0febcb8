"""``GET /x402/invoices/{id}/events``: an invoice's status as server-sent events.

The stream sends the invoice's state at once (the body of ``GET /x402/invoices/{id}``,
as event ``open``, ``paid``, ``credited``, ``claimed``, ``expired`` or ``reorged``),
then a new state each time it changes, and while the invoice is ``paid`` an event
``confirmations`` each time a new head of its chain raises the payment's count
(k of n). It is woken by the process's one listening connection (``api/live.py``)
and reads the invoice once per wake-up: never a polling loop. A comment line every
``WATCHER_SSE_HEARTBEAT_SECONDS`` keeps proxies from closing a quiet stream; the
stream ends after ``claimed``, or after ``expired`` once late payments can no longer
pay it.

Each message's ``id`` is ``<newest invoice event>:<status>:<confirmations>``. A
client that reconnects with ``Last-Event-ID`` gets only what changed since: the state
when an event came or the status moved, else the confirmations when they rose, else
nothing until the next change.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from api import invoices, live, models
from api.errors import DB_ERRORS, ApiError, service_unavailable
from watcher import db
from watcher.settings import Settings

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: do not buffer
# A read at a deadline waits this much past it: the database's clock decides the
# status, and a read a moment early would see no change and wait for the next event.
DEADLINE_MARGIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a client is: the SSE ``id`` of the last message it got."""

    seq: int  # the invoice's newest event id
    status: str
    have: int  # confirmations of the pending payment (0 unless paid on a k-of-n chain)

    def text(self) -> str:
        return f"{self.seq}:{self.status}:{self.have}"


def parse_mark(text: str | None) -> Mark | None:
    """A ``Last-Event-ID`` this stream wrote; None (send the state) for anything else."""
    if not text or len(text) > 64:
        return None
    parts = text.split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    return Mark(int(parts[0]), parts[1], int(parts[2]))


def _have(snap: Mapping[str, Any]) -> int:
    if snap["status"] != "paid":
        return 0
    have = snap.get("payment", {}).get("confirmations", {}).get("have")
    return int(have) if isinstance(have, int) else 0


async def read(pool: db.Pool, settings: Settings, invoice_id: UUID) -> tuple[dict[str, Any], Mark]:
    """The invoice as GET answers it, and its mark. The event id is read first: an event
    committing in between makes the next wake-up send the state again, never lose it."""
    try:
        seq = int(await pool.fetchval(db.q("live_invoice_seq"), str(invoice_id)) or 0)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    snap = await invoices.status(pool, settings, invoice_id)
    return snap, Mark(seq, str(snap["status"]), _have(snap))


def _message(mark: Mark, event: str, data: Mapping[str, Any]) -> str:
    body = json.dumps(data, separators=(",", ":"))
    return f"id: {mark.text()}\nevent: {event}\ndata: {body}\n\n"


def changes(snap: Mapping[str, Any], mark: Mark, last: Mark | None) -> list[str]:
    """What a client at ``last`` has not seen yet of the invoice now at ``mark``."""
    if last is None or (mark.seq, mark.status) != (last.seq, last.status):
        # The same body GET /x402/invoices/{id} answers (its model, its JSON).
        body = models.Invoice.model_validate(snap).model_dump(mode="json", exclude_none=True)
        return [_message(mark, mark.status, body)]
    if mark.status == "paid" and mark.have != last.have:
        payment = snap.get("payment", {})
        data = {
            "invoice_id": snap["invoice_id"],
            "status": "paid",
            "tx_hash": payment.get("tx_hash"),
            "confirmations": payment.get("confirmations"),
        }
        return [_message(mark, "confirmations", data)]
    return []


def _now() -> datetime:
    return datetime.now(UTC)


def _terminal(snap: Mapping[str, Any]) -> bool:
    if snap["status"] == "claimed":
        return True
    until: datetime = snap["late_payments_until"]
    return snap["status"] == "expired" and _now() >= until


def _deadline(snap: Mapping[str, Any]) -> float | None:
    """Seconds until the status changes with no event: at expiry, then at the grace's end."""
    now = _now()
    expires: datetime = snap["expires_at"]
    until: datetime = snap["late_payments_until"]
    if snap["status"] == "open" and now < expires:
        return (expires - now).total_seconds() + DEADLINE_MARGIN_SECONDS
    if snap["status"] == "expired" and now < until:
        return (until - now).total_seconds() + DEADLINE_MARGIN_SECONDS
    return None


async def _next_wake(
    sub: live.Subscription,
    paid: bool,
    heartbeat: float,
    deadline: float | None,
    last_out: list[float],
) -> AsyncIterator[str]:
    """Heartbeat comments until a wake-up worth a read (yields nothing else); the caller
    reads again when this returns, or ends the stream when ``sub`` was dropped."""
    due = None if deadline is None else time.monotonic() + deadline
    while True:
        now = time.monotonic()
        wait = heartbeat - (now - last_out[0])
        if due is not None:
            wait = min(wait, due - now)
        try:
            what = await asyncio.wait_for(sub.queue.get(), max(wait, 0.0))
        except TimeoutError:
            if due is not None and time.monotonic() >= due:
                return
            last_out[0] = time.monotonic()
            yield ": keep-alive\n\n"
            continue
        wakes = {what}
        while not sub.queue.empty():  # one read for a burst
            wakes.add(sub.queue.get_nowait())
        if wakes != {"head"} or paid:  # a head matters only to a paid invoice's count
            return


async def _stream(
    app: FastAPI, invoice_id: UUID, chain: str, resume: Mark | None, client: str
) -> AsyncIterator[str]:
    pool: db.Pool = app.state.pool
    settings: Settings = app.state.settings
    hub: live.Hub = app.state.live
    heartbeat = settings.watcher_sse_heartbeat_seconds
    last, last_out = resume, [time.monotonic()]
    with hub.subscribe(str(invoice_id), chain, client, _caps(settings)) as sub:
        while not sub.dropped:  # dropped at once: over a cap (see response)
            try:
                snap, mark = await read(pool, settings, invoice_id)
            except ApiError:
                return  # the database went away: the client reconnects with Last-Event-ID
            for out in changes(snap, mark, last):
                last_out[0] = time.monotonic()
                yield out
            last = mark
            if _terminal(snap):
                return
            async for beat in _next_wake(
                sub, mark.status == "paid", heartbeat, _deadline(snap), last_out
            ):
                yield beat
            if sub.dropped:
                return


async def response(
    app: FastAPI, invoice_id: UUID, last_event_id: str | None, client: str
) -> StreamingResponse:
    """The stream, after the checks a plain GET makes (404 for an unknown invoice) and
    the caps: ``WATCHER_SSE_MAX_STREAMS`` a process (503),
    ``WATCHER_SSE_MAX_STREAMS_PER_CLIENT`` for ``client`` (429)."""
    hub: live.Hub | None = getattr(app.state, "live", None)
    if hub is None or not hub.running:
        raise ApiError(
            503,
            "live_status_unavailable",
            "live invoice status is not running in this process",
            "poll GET /x402/invoices/{id}, or retry shortly",
        )
    _refuse_over_cap(hub, client, _caps(app.state.settings))
    snap, _ = await read(app.state.pool, app.state.settings, invoice_id)
    gen = _stream(app, invoice_id, str(snap["chain"]), parse_mark(last_event_id), client)
    return StreamingResponse(gen, media_type=MEDIA_TYPE, headers=HEADERS)


def _caps(settings: Settings) -> tuple[int, int]:
    return settings.watcher_sse_max_streams, settings.watcher_sse_max_streams_per_client


def _refuse_over_cap(hub: live.Hub, client: str, caps: tuple[int, int]) -> None:
    over = hub.refusal(client, caps)
    if over == "process":
        raise ApiError(
            503,
            "too_many_streams",
            f"this process already serves {caps[0]} invoice streams",
            "poll GET /x402/invoices/{id}, or retry shortly",
            headers={"Retry-After": "5"},
        )
    if over == "client":
        raise ApiError(
            429,
            "too_many_streams",
            f"your address already holds {caps[1]} invoice streams open",
            "close a stream you no longer read, then retry",
            headers={"Retry-After": "5"},
        )
