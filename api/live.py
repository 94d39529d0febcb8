"""Live invoice status: one LISTEN connection per API process, fanned out to its streams.

The hub holds one dedicated PostgreSQL connection (not one of the pool's: a pooled
connection is reset on release and serves requests), listening on two channels:

* ``watcher_invoices`` (payload: an invoice id), sent at commit by every invoice
  event (``emit_events``, migration 0020);
* ``watcher_heads`` (payload: ``<chain>:<head>``), sent at commit when a follower's
  cursor reaches a new head (query ``set_cursor``).

Each SSE stream (``api/invoice_stream.py``) subscribes with its invoice and chain
and gets a bounded queue of wake-ups; the stream reads the invoice once per wake-up.
A client too slow to drain its queue is dropped (its stream ends), never the hub.
When the connection is lost (database restart, a terminated backend, a silent
network) the hub reconnects with a backoff and wakes every stream once, since
notifications sent meanwhile are lost. Started and stopped by the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import structlog

from watcher import db, events

log = structlog.get_logger(__name__)

Connect = Callable[[], Awaitable["asyncpg.Connection[asyncpg.Record]"]]
# What a stream is woken with: its invoice changed, its chain has a new head, the hub
# reconnected (read again: notifications may have been missed), or it was dropped.
Wake = Literal["invoice", "head", "resync", "dropped"]

QUEUE_SIZE = 32  # wake-ups a stream may have waiting before it counts as too slow
PING_SECONDS = 10.0  # a silent connection is checked this often
PING_TIMEOUT_SECONDS = 5.0
RETRY_SECONDS = 0.5  # first reconnect delay, doubled up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
APPLICATION_NAME = "usdc-watcher live"
# A session ends on these; anything else is a bug and ends the hub (loudly).
_LOST: tuple[type[BaseException], ...] = (*db.TRANSIENT_ERRORS, TimeoutError, asyncpg.PostgresError)


@dataclass(eq=False)
class Subscription:
    """One stream's place in the hub: its invoice, its chain, its wake-ups."""

    invoice_id: str
    chain: str
    client: str = ""
    queue: asyncio.Queue[Wake] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False

    def wake(self, what: Wake) -> bool:
        """Queue a wake-up; False (and the stream told to end) when the queue is full."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(what)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            while not self.queue.empty():  # make room for the one message that matters
                self.queue.get_nowait()
            self.queue.put_nowait("dropped")
            return False


def pool_connector(pool: db.Pool) -> Connect:
    """Dedicated connections made like the pool's own (same DSN and options), outside it.

    The API is handed the pool only; asyncpg keeps the pool's connection arguments on
    it without a public getter, so they are read from there.
    """
    args: tuple[Any, ...] = pool._connect_args  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = dict(pool._connect_kwargs)  # type: ignore[attr-defined]
    server = {**kwargs.pop("server_settings", {}), "application_name": _app_name()}

    async def connect() -> asyncpg.Connection[asyncpg.Record]:
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            *args, **{"timeout": CONNECT_TIMEOUT_SECONDS, **kwargs}, server_settings=server
        )
        return conn

    return connect


def _report_crash(task: asyncio.Task[None]) -> None:
    """A hub that died of a bug says so (new streams then get 503, see invoice_stream)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("live_hub_crashed", error=repr(exc)[:300])


def _app_name() -> str:
    return f"{APPLICATION_NAME} pid={os.getpid()}"


# The hubs running in this process, by pool: id(pool) -> (hub, apps using it). The
# daemon may serve two apps (the main listener and the gateway's) on one pool; they
# share one hub, so a process holds one listening connection.
_SHARED: dict[int, tuple[Hub, int]] = {}


def attach(pool: db.Pool) -> Hub:
    """The process's hub on ``pool``, started by its first app (an app's lifespan start)."""
    hub, users = _SHARED.get(id(pool), (None, 0))
    if hub is None:
        hub = Hub(pool_connector(pool))
        hub.start()
    _SHARED[id(pool)] = (hub, users + 1)
    return hub


async def detach(pool: db.Pool) -> None:
    """An app is done with its hub (its lifespan end); the last one stops it."""
    entry = _SHARED.get(id(pool))
    if entry is None:
        return
    hub, users = entry
    if users > 1:
        _SHARED[id(pool)] = (hub, users - 1)
        return
    del _SHARED[id(pool)]
    await hub.stop()


class Hub:
    """The process's one listening connection and the streams it wakes."""

    def __init__(
        self,
        connect: Connect,
        *,
        ping_seconds: float = PING_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._connect = connect
        self._ping = ping_seconds
        self._retry = retry_seconds
        self._by_invoice: dict[str, set[Subscription]] = {}
        self._by_chain: dict[str, set[Subscription]] = {}
        # Streams open, by client and in all, until their generator ends: a stream dropped
        # for not reading still holds its socket until the client goes, so it still counts.
        self._by_client: dict[str, int] = {}
        self._open = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self.connected = asyncio.Event()  # set while LISTEN is in place
        self.sessions = 0  # connections that reached LISTEN (tests and logs read it)
        self.dropped = 0  # streams dropped for being too slow

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start listening in the background (a database that is down is retried)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="live-hub")
            self._task.add_done_callback(_report_crash)

    async def stop(self) -> None:
        """Stop listening and end every stream."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subs in list(self._by_invoice.values()):
            for sub in list(subs):
                sub.wake("dropped")

    def refusal(self, client: str, caps: tuple[int, int]) -> Literal["process", "client"] | None:
        """Whether a new stream for ``client`` would pass a cap: ``caps`` is (streams in
        the process, streams of one client); None when it fits."""
        if self._open >= caps[0]:
            return "process"
        if self._by_client.get(client, 0) >= caps[1]:
            return "client"
        return None

    @contextlib.contextmanager
    def subscribe(
        self, invoice_id: str, chain: str, client: str = "", caps: tuple[int, int] | None = None
    ) -> Iterator[Subscription]:
        """A stream's subscription for as long as the ``with`` block runs. With ``caps``
        (see :meth:`refusal`), one over a cap (streams opened at once all passed the
        check before any subscribed) is handed back already dropped, never registered."""
        sub = Subscription(invoice_id, chain, client)
        if caps is not None and self.refusal(client, caps) is not None:
            sub.dropped = True
            yield sub
            return
        self._by_invoice.setdefault(invoice_id, set()).add(sub)
        self._by_chain.setdefault(chain, set()).add(sub)
        self._by_client[client] = self._by_client.get(client, 0) + 1
        self._open += 1
        try:
            yield sub
        finally:
            self._forget(sub)
            self._open -= 1
            held = self._by_client.pop(client, 1) - 1
            if held > 0:
                self._by_client[client] = held

    def subscribers(self) -> int:
        return sum(len(s) for s in self._by_invoice.values())

    def _forget(self, sub: Subscription) -> None:
        for index, key in ((self._by_invoice, sub.invoice_id), (self._by_chain, sub.chain)):
            subs = index.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del index[key]

    def _fan_out(self, subs: set[Subscription] | None, what: Wake) -> None:
        for sub in list(subs or ()):
            if not sub.wake(what):
                self.dropped += 1
                log.warning("live_stream_dropped", invoice=sub.invoice_id, reason="too slow")
                self._forget(sub)

    def _on_invoice(self, _c: object, _pid: int, _channel: str, payload: object) -> None:
        self._fan_out(self._by_invoice.get(str(payload)), "invoice")

    def _on_head(self, _c: object, _pid: int, _channel: str, payload: object) -> None:
        chain, _, _number = str(payload).rpartition(":")
        self._fan_out(self._by_chain.get(chain), "head")

    async def _run(self) -> None:
        delay = self._retry
        while True:
            try:
                await self._session()
                delay = self._retry
            except asyncio.CancelledError:
                raise
            except _LOST as exc:
                log.warning("live_listen_lost", error=repr(exc)[:300], retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _session(self) -> None:
        """One connection's life: LISTEN, wake everyone if it is a reconnect, ping until lost."""
        conn = await self._connect()
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c: lost.set())
        try:
            await conn.add_listener(events.INVOICE_CHANNEL, self._on_invoice)
            await conn.add_listener(events.HEAD_CHANNEL, self._on_head)
            self.sessions += 1
            self.connected.set()
            if self.sessions > 1:  # what was announced while we were away is lost: read again
                for subs in list(self._by_invoice.values()):
                    self._fan_out(subs, "resync")
            log.info("live_listening", session=self.sessions)
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self._ping)
                if not lost.is_set():
                    await asyncio.wait_for(conn.fetchval(db.q("live_ping")), PING_TIMEOUT_SECONDS)
        finally:
            self.connected.clear()
            conn.terminate()  # never wait on a connection that may be half gone
