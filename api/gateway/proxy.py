"""Reverse-proxy mode: the gateway's routes served at their own paths, paid, then forwarded.

One request, in order (docs/gateway.md has the sequence diagram):

1. The route is found (none: 404, never proxied); a body over the route's limit is
   a 413 before anything is charged. Uploads are read whole up to that limit so
   their SHA-256 can be signed, unless the route says ``stream_request`` (then
   they are relayed as they come and signed ``UNSIGNED-PAYLOAD``).
2. The call is charged through the one gate (``api/gateway/common.py``): token,
   x402, subscriber key, or free. A 402 says the route's price.
3. The upstream gets the payer's headers minus the payment and hop-by-hop ones,
   the upstream's injected headers, and our signed ``X-Payment-*`` headers.
4. The answer is relayed as it comes (chunked and server-sent events included);
   an answer with a ``Content-Length`` of at most 64 KiB is read whole (cheaper to
   relay, and ``idempotency.StoreAnswers`` keeps it so a keyed retry is replayed
   without calling the upstream again).

Failures are ours to name: upstream unreachable 502, timeout 504, each with our
JSON body. Any 5xx (theirs or ours) gives a token unit or a subscriber call back
(``paywall.RefundOn5xx``). An x402 payment settles before the upstream is called
(a streamed answer cannot wait for the chain, and a call is never served on a
payment that then fails to settle), so it stands when the upstream fails: the
answer still carries ``PAYMENT-RESPONSE`` and names the charge.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from api import gate, idempotency, public_url, ratelimit
from api.errors import ApiError
from api.gateway import common
from watcher import gateway_config, gateway_paths, metrics
from watcher.gateway_config import GatewayConfig, Route, Upstream

log = structlog.get_logger(__name__)

METHODS = sorted(gateway_paths.METHODS)  # every method a route may name
# An answer of known length up to this size is read whole (and a keyed one replayable).
REPLAYABLE_BYTES = idempotency.MAX_STORED_BODY_BYTES
_HTTP_KEY = "gateway_http"


def install(app: FastAPI, config: GatewayConfig) -> None:
    """Serve ``config``'s routes on ``app``: one catch-all route, added last, so our own
    routes (reserved prefixes, refused in the file) always win."""
    app.state.gateway = config
    setattr(app.state, _HTTP_KEY, _client())
    app.router.routes.append(
        StarletteRoute("/{gateway_path:path}", proxy, methods=METHODS, include_in_schema=False)
    )


def _client() -> httpx.AsyncClient:
    # Timeouts are per upstream (set on each request); the pool is shared. Redirects are
    # the payer's to follow, never ours; no environment proxies (the upstream is ours).
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )


async def aclose(app: FastAPI) -> None:
    """Close the upstream connection pool (the app's lifespan calls this)."""
    client: httpx.AsyncClient | None = getattr(app.state, _HTTP_KEY, None)
    if client is not None:
        await client.aclose()


async def proxy(request: Request) -> Response:
    config: GatewayConfig = request.app.state.gateway
    raw_path = _raw_path(request)
    found = config.find(request.method, raw_path)
    if found is None:
        raise ApiError(
            404,
            "no_route",
            f"no gateway route for {request.method} {request.url.path}",
            "check the method and path against the API's documentation",
        )
    route, params = found
    gate.check_path(request.url.path, request.url.query)
    body = await _read_body(request, route)
    charged = await _charge(request, route)
    upstream = config.upstreams[route.upstream]
    target = route.target(params, request.url.query)
    try:
        answer = await _send(request, route, upstream, target, body, charged)
    except ApiError as exc:  # ours: 502 / 504; the payer learns what they were charged
        exc.headers.update(_payer_headers(charged))
        _unserved(route, charged, exc.status)
        raise
    if answer.status_code >= 500:
        _unserved(route, charged, answer.status_code)
    return answer


def _raw_path(request: Request) -> str:
    """The path as the client sent it (percent-encoding kept: ``%2F`` is not a slash)."""
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path


async def _read_body(request: Request, route: Route) -> bytes | None:
    """The upload, read up to the route's limit (413 beyond, before any charge); None for a
    ``stream_request`` route, whose body is relayed as it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > route.max_body_bytes:
        raise _too_large(route)
    if route.stream_request:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > route.max_body_bytes:
            raise _too_large(route)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body
    return body


def _too_large(route: Route) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"{route.label} takes at most {route.max_body_bytes} bytes of body",
        "send a smaller body",
        limit_bytes=route.max_body_bytes,
    )


async def _charge(request: Request, route: Route) -> gate.Charge:
    state = request.app.state
    fingerprint = None
    if not route.stream_request:  # a streamed upload cannot be fingerprinted up front

        async def fingerprint() -> bytes:
            return await idempotency.fingerprint(request)

    return await common.charge(
        state,
        route,
        public_url.of_request(request),
        request.headers,
        request.scope.setdefault("state", {}),
        client=ratelimit.client_id(request),
        invoice_url=public_url.of_route(request, "create_invoice"),
        fingerprint=fingerprint,
    )


def _outgoing_headers(
    request: Request, upstream: Upstream, headers: dict[str, str], rail: str
) -> list[tuple[str, str]]:
    out = common.forwardable(request.headers.items(), rail)
    if rail == gateway_config.FREE_RAIL:  # nothing charged: the upstream may want the key
        key = request.headers.get(idempotency.HEADER)
        if key is not None:
            out.append((idempotency.HEADER.lower(), key))
    injected = {k.lower() for k in upstream.headers}
    out = [(k, v) for k, v in out if k not in injected and not k.startswith("x-forwarded-")]
    peer = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    out.append(("x-forwarded-for", f"{prior}, {peer}" if prior else peer))
    out.append(("x-forwarded-proto", request.url.scheme))
    if "host" in request.headers:
        out.append(("x-forwarded-host", request.headers["host"]))
    out.extend((k, v) for k, v in upstream.headers.items())
    out.extend(headers.items())
    return out


async def _send(
    request: Request,
    route: Route,
    upstream: Upstream,
    target: str,
    body: bytes | None,
    charged: gate.Charge,
) -> Response:
    settings = request.app.state.settings
    secret = common.secret_for(settings, upstream)
    ours = common.upstream_headers(
        charged, request.method, target, common.body_digest(body), secret
    )
    client: httpx.AsyncClient = getattr(request.app.state, _HTTP_KEY)
    timeout = httpx.Timeout(
        upstream.timeout_seconds,
        connect=upstream.connect_timeout_seconds,
    )
    content: Any = body if body is not None else _limited(request, route)
    outgoing = client.build_request(
        request.method,
        upstream.url + target,
        headers=_outgoing_headers(request, upstream, ours, charged.rail),
        content=content,
        timeout=timeout,
    )
    try:
        reply = await client.send(outgoing, stream=True)
    except httpx.TimeoutException as exc:
        raise _upstream_error(504, "upstream_timeout", route, upstream, exc) from exc
    except httpx.HTTPError as exc:
        raise _upstream_error(502, "upstream_unreachable", route, upstream, exc) from exc
    return await _relay(reply, charged, route)


async def _limited(request: Request, route: Route) -> AsyncIterator[bytes]:
    """A ``stream_request`` upload, relayed as it comes, cut off past the route's limit."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > route.max_body_bytes:
            raise _too_large(route)
        yield chunk


def _upstream_error(
    status: int, code: str, route: Route, upstream: Upstream, exc: Exception
) -> ApiError:
    what = "did not answer in time" if status == 504 else "could not be reached"
    log.warning(
        "gateway_upstream_failed", route=route.label, upstream=upstream.name, error=repr(exc)
    )
    return ApiError(
        status,
        code,
        f"the upstream {upstream.name!r} {what}",
        "retry later; a token unit or subscriber call is given back, an x402 payment stands "
        "(see X-Payment-Charge-Id)",
        upstream=upstream.name,
    )


def _payer_headers(charged: gate.Charge) -> dict[str, str]:
    """What the payer is told about this call's charge (never the upstream's signature)."""
    out = dict(charged.headers)  # PAYMENT-RESPONSE and Cache-Control on the x402 rail
    if charged.rail != gateway_config.FREE_RAIL:
        out["X-Payment-Charge-Id"] = charged.charge_id
        out["X-Payment-Remaining"] = str(charged.remaining)
    return out


def _response_headers(reply: httpx.Response, charged: gate.Charge) -> dict[str, str]:
    pairs = [(k.lower(), v) for k, v in reply.headers.multi_items()]
    named = {
        t.strip().lower() for k, v in pairs if k == "connection" for t in v.split(",") if t.strip()
    }
    kept: dict[str, str] = {}
    for name, value in pairs:
        if name in common.HOP_BY_HOP or name in named or name.startswith(common.OUR_PREFIX):
            continue
        if name in ("payment-response", "x-payment-response", "payment-required"):
            continue  # only we speak x402 to the payer
        kept[name] = f"{kept[name]}, {value}" if name in kept and name != "set-cookie" else value
    if charged.rail != gateway_config.FREE_RAIL and "no-store" not in kept.get("cache-control", ""):
        kept["cache-control"] = "private"  # a paid answer is this payer's, never a shared cache's
    kept.update({k.lower(): v for k, v in _payer_headers(charged).items() if k != "Cache-Control"})
    return kept


async def _relay(reply: httpx.Response, charged: gate.Charge, route: Route) -> Response:
    headers = _response_headers(reply, charged)
    length = reply.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) <= REPLAYABLE_BYTES:
        # A small answer of known length is read whole: one piece is cheaper to relay than
        # a stream, and StoreAnswers keeps a one-piece answer for an Idempotency-Key replay.
        try:  # the raw bytes: Content-Encoding and Content-Length stay the upstream's
            body = b"".join([chunk async for chunk in reply.aiter_raw()])
        finally:
            await reply.aclose()
        return Response(body, reply.status_code, headers=headers)
    metrics.GATEWAY_STREAMED.labels(route.label).inc()
    return StreamingResponse(
        _pieces(reply), reply.status_code, headers=headers, background=BackgroundTask(reply.aclose)
    )


async def _pieces(reply: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream's bytes as they arrive, encoding untouched (``Content-Encoding`` kept)."""
    with contextlib.suppress(httpx.StreamClosed):
        async for chunk in reply.aiter_raw():
            yield chunk


def _unserved(route: Route, charged: gate.Charge, status: int) -> None:
    """A call the upstream failed: counted and logged; an x402 payment stands (the refund
    of a token unit or subscriber call is ``paywall.RefundOn5xx``'s)."""
    metrics.GATEWAY_UPSTREAM_FAILURES.labels(route.label, charged.rail).inc()
    if charged.rail == "x402":
        log.warning(
            "gateway_x402_unserved",
            route=route.label,
            charge_id=charged.charge_id,
            payer=charged.payer,
            status=status,
        )
