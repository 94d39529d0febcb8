"""The connection pool of netguard's client: keep-alive HTTP/1.1 connections per origin.

httpcore's own pool re-examines every connection it holds, several times over, for
every request and every response closed (it counts the idle ones inside a loop over
them): with the delivery worker's few dozen connections that was most of a delivery's
CPU. This one keeps a stack of idle connections per origin: a request takes the most
recently used one that is still fit (not expired, nothing unexpected read: one check
of one connection) or opens a new one; an answer closed gives its connection back.

Connections are httpcore's own (``AsyncHTTPConnection``: the dial goes through the
guarded network backend, TLS checks the certificate against the URL's host), so what
is judged and how is unchanged; only the bookkeeping is ours. ``max_connections``
bounds the requests in flight (each on its own connection); at most
``max_keepalive_connections`` idle ones are kept, each for ``keepalive_expiry``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import types
from collections.abc import AsyncIterable, AsyncIterator

import httpcore

SWEEP_SECONDS = 1.0  # how often idle connections are looked over for expiry

Key = tuple[bytes, bytes, int]


class Pool:
    """Stands where httpx's transport keeps its httpcore pool."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        network_backend: httpcore.AsyncNetworkBackend,
        max_connections: int | None,
        max_keepalive_connections: int | None,
        keepalive_expiry: float | None,
    ) -> None:
        self._ssl_context = ssl_context
        self._backend = network_backend
        self._slots = asyncio.Semaphore(max_connections or 1_000_000)
        self._keep = 1_000_000 if max_keepalive_connections is None else max_keepalive_connections
        self._expiry = keepalive_expiry
        self._idle: dict[Key, list[httpcore.AsyncHTTPConnection]] = {}
        self._idle_count = 0
        self._busy: set[httpcore.AsyncHTTPConnection] = set()
        self._swept_at = time.monotonic()
        self._closed = False

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        if self._slots.locked():
            wait = request.extensions.get("timeout", {}).get("pool")
            try:
                async with asyncio.timeout(wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpcore.PoolTimeout("no connection free in time") from None
        else:
            await self._slots.acquire()
        try:
            conn = await self._take(request.url.origin)
        except BaseException:
            self._slots.release()
            raise
        self._busy.add(conn)
        try:
            response = await conn.handle_async_request(request)
        except BaseException:
            await self._give_back(conn)
            raise
        assert isinstance(response.stream, AsyncIterable)
        return httpcore.Response(
            status=response.status,
            headers=response.headers,
            content=_Body(response.stream, self, conn),
            extensions=response.extensions,
        )

    async def _take(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        await self._sweep()
        stack = self._idle.get((origin.scheme, origin.host, origin.port))
        while stack:
            conn = stack.pop()
            self._idle_count -= 1
            if _fit(conn):
                return conn
            await conn.aclose()
        return httpcore.AsyncHTTPConnection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._expiry,
            network_backend=self._backend,
        )

    async def _give_back(self, conn: httpcore.AsyncHTTPConnection) -> None:
        """The request on ``conn`` is over: its slot is free; the connection is kept idle
        if it may carry another request and there is room, else closed."""
        self._busy.discard(conn)
        self._slots.release()
        if self._closed or not _fit(conn) or self._idle_count >= self._keep:
            await conn.aclose()
            return
        origin = conn._origin  # httpcore keeps it private; it is the request's origin
        self._idle.setdefault((origin.scheme, origin.host, origin.port), []).append(conn)
        self._idle_count += 1

    async def _sweep(self) -> None:
        """Close idle connections gone stale (expired, or the server closed them)."""
        now = time.monotonic()
        if now - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = now
        stale = []
        for key, stack in list(self._idle.items()):
            keep = [c for c in stack if _fit(c)]
            stale += [c for c in stack if c not in keep]
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        self._idle_count -= len(stale)
        for conn in stale:
            await conn.aclose()

    async def aclose(self) -> None:
        self._closed = True
        every = [c for stack in self._idle.values() for c in stack] + list(self._busy)
        self._idle.clear()
        self._idle_count = 0
        self._busy.clear()
        for conn in every:
            await conn.aclose()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: types.TracebackType | None = None,
    ) -> None:
        await self.aclose()


def _fit(conn: httpcore.AsyncHTTPConnection) -> bool:
    """May carry another request now: idle, not expired, nothing unexpected read."""
    return not conn.is_closed() and conn.is_idle() and not conn.has_expired()


class _Body:
    """An answer's body; closing it hands the connection back to the pool."""

    def __init__(
        self, inner: AsyncIterable[bytes], pool: Pool, conn: httpcore.AsyncHTTPConnection
    ) -> None:
        self._inner = inner
        self._pool = pool
        self._conn = conn
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._inner:
                yield part
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            closing = getattr(self._inner, "aclose", None)
            if closing is not None:
                await closing()
        finally:
            await self._pool._give_back(self._conn)
