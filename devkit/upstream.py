"""A small real upstream for the gateway tests: uvicorn in its own thread on a free port.

Routes (any of them under ``/unsigned/...`` skips the gateway check, see below):

    /echo, /echo/{rest}    any method: JSON of method, raw path, raw query, the headers
                           received, body length and SHA-256
    /stream?n=&delay_ms=   a chunked response of n pieces, delay_ms apart
    /sse?n=&delay_ms=      text/event-stream, n events delay_ms apart
    /slow?seconds=         sleeps, then answers
    /fail                  500 with a JSON body
    /gzip                  a gzip-encoded answer with its Content-Length
    /status/{code}         answers that status
    /upload/{name}         POST/PUT: reads the body as it arrives; ``uploads[name]`` is the
                           byte count so far (a test reads it while still sending, which
                           proves the request is streamed), the answer lists the pieces

With a ``secret``, every other route first checks the ``X-Payment-*`` headers the
gateway signs (GATEWAY_SPEC.md) with :func:`verify_gateway` and answers 401 with a JSON
``reason`` when a check fails. Its own thread and event loop keep it answering while the
test's loop is busy (or blocked in a subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devkit.anvil import free_port

MAX_SIGNED_BODY = 64 * 1024 * 1024  # what the check buffers to hash; larger is refused
ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


# The upstream's side of GATEWAY_SPEC.md, stdlib only (the docs' Python snippet).
def verify_gateway(
    secret: bytes,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    seen: dict[str, float],
    now: float | None = None,
) -> str | None:
    """None if the request came through the gateway, else why not.

    target: path and query exactly as received; headers: any mapping (any case); body:
    the bytes read (not checked when the gateway sent UNSIGNED-PAYLOAD); seen: a dict the
    caller keeps between requests, charge id -> when it was first seen.
    """
    h = {k.lower(): v for k, v in headers.items()}
    ts, charge = h.get("x-payment-timestamp", ""), h.get("x-payment-charge-id", "")
    body_hash, sigs = h.get("x-payment-body-sha256", ""), h.get("x-payment-signature", "")
    if not (ts.isascii() and ts.isdigit() and charge and body_hash and sigs):
        return "missing or malformed X-Payment-* headers"
    now = time.time() if now is None else now
    if abs(now - int(ts)) > 300:
        return "timestamp outside 300 s"
    canonical = "\n".join(["x402-gateway-v1", ts, method.upper(), target, charge, body_hash])
    want = b"v1=" + hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest().encode()
    if not any(hmac.compare_digest(want, s.encode()) for s in sigs.split()):
        return "bad signature"
    if body_hash != "UNSIGNED-PAYLOAD" and body_hash != hashlib.sha256(body).hexdigest():
        return "body hash mismatch"
    for old in [c for c, t in seen.items() if now - t > 600]:
        del seen[old]
    if charge in seen:
        return "charge id already used"
    seen[charge] = now
    return None


class GatewayCheck:
    """ASGI middleware: the check before any route but ``/unsigned/...``.

    A signed body is read whole first (the hash must match before the route acts); an
    ``UNSIGNED-PAYLOAD`` request keeps its body streaming to the route.
    """

    def __init__(self, app: ASGIApp, upstream: Upstream) -> None:
        self.app = app
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secret = self.upstream.secret
        if scope["type"] != "http" or secret is None or scope["path"].startswith("/unsigned/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        unsigned = headers.get("x-payment-body-sha256") == "UNSIGNED-PAYLOAD"
        body = b"" if unsigned else await _read_all(receive)
        if body is None:
            await _refuse(self.upstream, "body too large to check", scope, send)
            return
        reason = verify_gateway(
            secret, scope["method"], _target(scope), headers, body, self.upstream.seen
        )
        if reason is not None:
            await _refuse(self.upstream, reason, scope, send)
            return
        self.upstream.accepted += 1
        await self.app(scope, receive if unsigned else _replay(body), send)


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


async def _read_all(receive: Receive) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_SIGNED_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # like a real client: nothing more until it leaves
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _refuse(upstream: Upstream, reason: str, scope: Scope, send: Send) -> None:
    upstream.refused.append(reason)
    body = json.dumps({"error": "gateway_check_failed", "reason": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---- routes --------------------------------------------------------------------------


def _int(request: Request, name: str, default: int, top: int) -> int:
    try:
        return max(0, min(int(request.query_params.get(name, default)), top))
    except ValueError:
        return default


async def echo(request: Request) -> Response:
    body = await request.body()
    raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    joined: dict[str, str] = {}
    for k, v in raw_headers:
        joined[k] = f"{joined[k]}, {v}" if k in joined else v
    return JSONResponse(
        {
            "method": request.method,
            "path": (request.scope.get("raw_path") or b"").decode("latin-1"),
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "headers": joined,
            "raw_headers": raw_headers,
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def stream(request: Request) -> Response:
    n, delay = _int(request, "n", 5, 1000), _int(request, "delay_ms", 100, 10_000) / 1000

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(n):
            if i:
                await asyncio.sleep(delay)
            yield f"piece {i}\n".encode()

    return StreamingResponse(pieces(), media_type="text/plain")


async def sse(request: Request) -> Response:
    n, delay = _int(request, "n", 5, 1000), _int(request, "delay_ms", 100, 10_000) / 1000

    async def events() -> AsyncIterator[bytes]:
        for i in range(n):
            if i:
                await asyncio.sleep(delay)
            yield f"id: {i}\nevent: tick\ndata: {json.dumps({'i': i})}\n\n".encode()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def slow(request: Request) -> Response:
    try:
        seconds = min(max(float(request.query_params.get("seconds", "1")), 0.0), 120.0)
    except ValueError:
        seconds = 1.0
    await asyncio.sleep(seconds)
    return JSONResponse({"slept": seconds})


async def fail(request: Request) -> Response:
    return JSONResponse({"error": "upstream_failure", "detail": "the upstream broke"}, 500)


GZIP_TEXT = b"compressed by the upstream, relayed untouched " * 20


async def gzipped(request: Request) -> Response:
    """A gzip-encoded answer of known length: a proxy must relay the encoded bytes."""
    body = gzip.compress(GZIP_TEXT)
    return Response(body, headers={"content-encoding": "gzip", "content-type": "text/plain"})


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    if not 200 <= code <= 599:
        return JSONResponse({"error": "status must be 200..599"}, 400)
    if code in (204, 304):
        return Response(status_code=code)
    return JSONResponse({"status": code}, code)


async def upload(request: Request) -> Response:
    up: Upstream = request.app.state.upstream
    name = request.path_params["name"]
    up.uploads[name] = 0
    digest, pieces, start = hashlib.sha256(), [], time.monotonic()
    async for chunk in request.stream():
        if chunk:
            up.uploads[name] += len(chunk)
            digest.update(chunk)
            pieces.append([round(time.monotonic() - start, 3), len(chunk)])
    return JSONResponse({"bytes": up.uploads[name], "sha256": digest.hexdigest(), "pieces": pieces})


def _routes(prefix: str) -> list[Route]:
    return [
        Route(f"{prefix}/echo", echo, methods=ANY),
        Route(f"{prefix}/echo/{{rest:path}}", echo, methods=ANY),
        Route(f"{prefix}/stream", stream),
        Route(f"{prefix}/sse", sse),
        Route(f"{prefix}/slow", slow, methods=ANY),
        Route(f"{prefix}/fail", fail, methods=ANY),
        Route(f"{prefix}/gzip", gzipped),
        Route(f"{prefix}/status/{{code:int}}", status, methods=ANY),
        Route(f"{prefix}/upload/{{name}}", upload, methods=["POST", "PUT"]),
    ]


# ---- the server ----------------------------------------------------------------------


class Upstream:
    """The app and what it saw: ``seen`` charge ids, ``refused`` reasons, ``uploads``."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret
        self.seen: dict[str, float] = {}
        self.refused: list[str] = []
        self.accepted = 0
        self.uploads: dict[str, int] = {}
        self.port = free_port()
        app = Starlette(routes=_routes("") + _routes("/unsigned"))
        app.state.upstream = self
        app.add_middleware(GatewayCheck, upstream=self)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,  # open SSE streams must not hold the stop
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"upstream did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("upstream did not stop")


@contextlib.contextmanager
def running(secret: bytes | None = None) -> Iterator[Upstream]:
    """An :class:`Upstream` serving until the block ends (sync, for scripts and tests)."""
    up = Upstream(secret)
    up.start()
    try:
        yield up
    finally:
        up.stop()


@contextlib.asynccontextmanager
async def upstream(secret: bytes | None = None) -> AsyncIterator[Upstream]:
    """The same for async tests; the start and stop waits run off the event loop."""
    up = Upstream(secret)
    await asyncio.to_thread(up.start)
    try:
        yield up
    finally:
        await asyncio.to_thread(up.stop)
