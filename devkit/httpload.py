"""A cheap load generator for the benches: hand-written keep-alive HTTP/1.1 on loopback.

The client does as little as it can per request (one write, a few readlines, one
read of the body), so on a 2-core machine most of the CPU is left to the server
being measured and the same client can drive every server a bench compares.

    conn = await Conn.open(port)               # one keep-alive connection
    status, seconds, body = await conn.request("GET", "/path", {"x-payment-token": t})
    rps = await load(port, "/path", [headers, ...], seconds=1.0, concurrency=32,
                     latencies=lat, statuses=st)
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

REQUEST_TIMEOUT_SECONDS = 30.0  # a server that stops answering ends the bench, not hangs it


class Conn:
    """One keep-alive HTTP/1.1 connection; ``request`` returns (status, seconds, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, local_host: str = "127.0.0.1") -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(local_host, 0))
        return cls(r, w)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, float, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        started = time.perf_counter()
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line.startswith(b"HTTP/"):  # closed, or a self-connected socket
            raise ConnectionError(f"no HTTP answer: {status_line[:80]!r}")
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        payload = await (self._chunks() if chunked else self.reader.readexactly(length))
        return int(status_line.split()[1]), time.perf_counter() - started, payload

    async def _chunks(self) -> bytes:
        parts = []
        while True:  # ends at the zero-size chunk; a closed connection raises
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(
    port: int,
    path: str,
    headers: Sequence[dict[str, str]],
    seconds: float,
    concurrency: int,
    latencies: list[float] | None = None,
    statuses: dict[int, int] | None = None,
) -> float:
    """Hammer ``GET path`` for ``seconds`` from ``concurrency`` connections, connection i
    sending ``headers[i % len(headers)]`` (none if empty); appends to
    ``latencies``/``statuses``; returns requests/s."""
    latencies = [] if latencies is None else latencies
    statuses = {} if statuses is None else statuses
    before = len(latencies)
    deadline = time.monotonic() + seconds

    async def worker(i: int) -> None:
        conn = await Conn.open(port)
        sent = headers[i % len(headers)] if headers else {}
        try:
            while time.monotonic() < deadline:
                status, took, _ = await conn.request("GET", path, sent)
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(took)
        finally:
            conn.close()

    started = time.monotonic()
    await asyncio.wait_for(
        asyncio.gather(*(worker(i) for i in range(concurrency))),
        seconds + REQUEST_TIMEOUT_SECONDS,
    )
    return (len(latencies) - before) / (time.monotonic() - started)


def summary(latencies: list[float], statuses: dict[int, int], rates: list[float]) -> dict[str, Any]:
    """One side of a comparison: median requests/s of its rounds, p50/p99, statuses."""
    return {
        "rps": round(statistics.median(rates), 1),
        "p50_ms": round(pct(latencies, 0.50), 3),
        "p99_ms": round(pct(latencies, 0.99), 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def wait_ready(port: int, proc: asyncio.subprocess.Process, path: str = "/readyz") -> None:
    """Until ``GET path`` answers 200 (bounded: 30 s); raises if ``proc`` exits first."""
    for _ in range(300):
        if proc.returncode is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = await Conn.open(port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            status, _, _ = await asyncio.wait_for(conn.request("GET", path, {}), 5)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            status = 0
        finally:
            conn.close()
        if status == 200:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"server on port {port} did not answer {path} with 200 in 30 s")
