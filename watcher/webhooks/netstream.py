"""The connection netguard dials: a TCP (then maybe TLS) stream on asyncio's own
transport, shaped as httpcore wants it (``httpcore.AsyncNetworkStream``).

Why not httpcore's anyio stream: the pool asks every pooled connection, at every
request, whether it is readable (``get_extra_info("is_readable")``), and anyio answers
by building a dict of attributes and polling the socket; with a few dozen keep-alive
connections that was a seventh of a delivery's CPU. Here the answer is the protocol's
own state (the event loop reads whatever arrives into our buffer: an idle connection
with bytes, an end of stream or an error is one not to reuse).

Writes are held until the next read (or ``CORK_LIMIT`` bytes): h11 hands over the
request's head and body separately and one ``send`` is cheaper than two, for us and
for the receiver. TLS is asyncio's (``loop.start_tls``): SNI and the certificate are
checked against the name httpcore passes (the URL's host), not the address dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

import httpcore

READ_LIMIT = 256 * 1024  # bytes buffered before the socket stops being read
CORK_LIMIT = 64 * 1024  # bytes of writes held before they are sent anyway


class _Protocol(asyncio.Protocol):
    """Buffers what arrives; wakes the one reader or writer waiting."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > READ_LIMIT and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: HTTP/1.1 has no half-closed use here

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        if exc is not None:
            self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self, limit: float | None) -> None:
        """Until the next event (data, end, error, writable), at most ``limit`` seconds."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            if limit is None:
                await self.waiter
            else:
                async with asyncio.timeout(limit):
                    await self.waiter
        finally:
            self.waiter = None


class Stream(httpcore.AsyncNetworkStream):
    """One connection; used by one request at a time (httpcore's HTTP/1.1 rule)."""

    def __init__(self, protocol: _Protocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self._transport = transport
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._write_timeout: float | None = None

    async def read(
        self,
        max_bytes: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> bytes:
        # A write that fails here is passed over, as httpcore passes over one while it
        # sends: a server may answer (413, say) and close before taking the whole body.
        with contextlib.suppress(httpcore.WriteError):
            await self._flush()
        p = self._protocol
        try:
            while not p.buffer and not p.eof:
                await p.wait(timeout)
        except TimeoutError:
            raise httpcore.ReadTimeout("no answer in time") from None
        if not p.buffer:
            if p.error is not None:
                raise httpcore.ReadError(f"connection lost: {p.error}") from p.error
            return b""
        data = bytes(p.buffer[:max_bytes])
        del p.buffer[:max_bytes]
        if p.reading_paused and len(p.buffer) <= READ_LIMIT // 2:
            p.reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(
        self,
        buffer: bytes,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> None:
        if not buffer:
            return
        self._held.append(buffer)
        self._held_bytes += len(buffer)
        self._write_timeout = timeout
        if self._held_bytes >= CORK_LIMIT:
            await self._flush()

    async def _flush(self) -> None:
        if not self._held:
            return
        data = b"".join(self._held) if len(self._held) > 1 else self._held[0]
        self._held.clear()
        self._held_bytes = 0
        p = self._protocol
        if p.error is not None or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(data)
        try:
            while p.writing_paused and p.error is None:
                await p.wait(self._write_timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout("the receiver does not read") from None
        if p.error is not None:
            raise httpcore.WriteError(f"connection lost: {p.error}") from p.error

    async def aclose(self) -> None:
        self._held.clear()
        if self._transport.is_closing():
            return
        if self._transport.get_write_buffer_size():
            self._transport.abort()  # a receiver that does not read cannot keep the socket
        else:
            self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        await self._flush()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.abort()
            raise httpcore.ConnectTimeout("the TLS handshake took too long") from None
        except (ssl.SSLError, OSError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        if transport is None:  # the connection went away during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)
        self._protocol.transport = transport
        return Stream(self._protocol, transport)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Idle HTTP/1.1: anything the server sent (bytes, an end, an error) means
            # this connection must not carry another request.
            p = self._protocol
            return bool(p.buffer) or p.eof or self._transport.is_closing()
        names = {
            "ssl_object": "ssl_object",
            "client_addr": "sockname",
            "server_addr": "peername",
            "socket": "socket",
        }
        if info in names:
            return self._transport.get_extra_info(names[info])
        return None


async def connect(ip: str, port: int, limit: float | None) -> httpcore.AsyncNetworkStream:
    """A TCP connection to ``ip`` (an address, never a name: nothing is looked up) within
    ``limit`` seconds; netguard's default ``Connect``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limit):
            transport, protocol = await loop.create_connection(
                _Protocol, ip, port, flags=socket.AI_NUMERICHOST
            )
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"connecting to {ip}:{port} timed out") from None
    except OSError as exc:
        raise httpcore.ConnectError(f"connecting to {ip}:{port}: {exc}") from exc
    assert isinstance(transport, asyncio.Transport)
    return Stream(protocol, transport)
