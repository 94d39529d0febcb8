"""Forward-auth mode: the operator's own proxy asks ``/gateway/authorize`` before each call.

nginx ``auth_request``, Traefik ``forwardAuth``, Caddy ``forward_auth`` and Envoy
``ext_authz`` (HTTP) send us a subrequest carrying the payer's headers and, in headers
of their own, the original method and URI (:func:`original`). We find the route, charge
it through the one gate (``common.charge``) and answer:

* 200 with the ``X-Payment-*`` headers (``common.upstream_headers``) for the proxy to
  copy onto the upstream request, plus ``Authorization`` when the payer's own one is not
  a subscriber key (a proxy that copies ``Authorization`` from us thereby drops a key:
  Traefik and Caddy replace a copied header by our value or remove it). The subrequest
  has no body, so the body hash is ``UNSIGNED-PAYLOAD``. An x402 payment's
  ``PAYMENT-RESPONSE`` rides along for the proxy to hand to the payer.
* the refusal as the gate words it: 402 (v1 body and ``PAYMENT-REQUIRED``), 400, 429,
  503; 404 when no route matches. nginx turns any auth status but 2xx/401/403 into a
  500, so when the recipe says ``X-Gateway-Proxy: nginx`` a refusal is a 401 whose
  headers carry the real status, the JSON body and the payer's headers; the recipe's
  ``error_page 401`` location answers the payer with them (docs/gateway.md).

The proxy's headers decide what is charged, so they are believed only from
``WATCHER_TRUSTED_PROXIES``; any other peer gets 403 before anything is read.
This mode never sees the upstream's answer: no refund on an upstream 5xx, and an
``Idempotency-Key`` on the token rail is refused (there is no answer to replay).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from starlette.datastructures import URL

from api import clientip, entitlements, gate, public_url, ratelimit
from api.errors import ApiError
from api.gateway import common
from api.x402 import offers
from watcher.gateway_config import GatewayConfig

PATH = "/gateway/authorize"
NGINX_HEADER = "x-gateway-proxy"  # the nginx recipe's flag: refusals as 401 + headers
REFUSAL_STATUS = "X-Gateway-Status"
REFUSAL_BODY = "X-Gateway-Body"
# Header values a refusal hands back to the payer (through nginx they travel as ours).
PAYER_HEADERS = (
    offers.PAYMENT_REQUIRED,
    offers.PAYMENT_RESPONSE,
    offers.X_PAYMENT_RESPONSE,
    "Retry-After",
    "Cache-Control",
)
MAX_URI_CHARS = 8192
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")

router = APIRouter(tags=["gateway"], include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Original:
    """The payer's request as the proxy describes it."""

    method: str
    path: str  # raw, still percent-encoded
    query: str
    url: URL  # the public URL: the x402 offer's resource


def _bad(error: str, message: str, fix: str) -> ApiError:
    return ApiError(400, error, message, fix)


def _first(value: str | None) -> str | None:
    """The first of a comma-joined list (a chain of proxies appends), stripped."""
    if value is None:
        return None
    first = value.split(",")[0].strip()
    return first or None


def original(request: Request) -> Original:
    """Method and URI from nginx (``X-Original-*``), Traefik and Caddy
    (``X-Forwarded-Method`` / ``-Uri``), else Envoy (the path after ``/gateway/authorize``,
    the subrequest's own method); host and scheme from ``X-Forwarded-Host|Proto``."""
    h = request.headers
    method = h.get("x-original-method") or h.get("x-forwarded-method")
    uri = h.get("x-original-uri") or h.get("x-forwarded-uri")
    if uri is None:  # Envoy: path_prefix + the original path and query
        raw = (request.scope.get("raw_path") or b"").decode("latin-1")
        rest = raw.split("?", 1)[0].removeprefix(PATH)
        if rest.startswith("/"):
            query = request.scope.get("query_string", b"").decode("latin-1")
            uri = rest + (f"?{query}" if query else "")
            method = method or request.method
    if not method or not uri:
        raise _bad(
            "forward_auth_no_original",
            "the proxy did not say which request to authorize",
            "send X-Original-Method and X-Original-URI (nginx) or X-Forwarded-Method and "
            "X-Forwarded-Uri (Traefik, Caddy); see docs/gateway.md, Forward-auth mode",
        )
    method = method.strip().upper()
    if not method.isascii() or not method.isalpha() or len(uri) > MAX_URI_CHARS:
        raise _bad(
            "forward_auth_bad_original",
            "the original method or URI is malformed",
            "check the proxy's forward-auth headers against docs/gateway.md",
        )
    if not uri.startswith("/") or any(c in uri for c in " \r\n\t#") or not uri.isascii():
        raise _bad(
            "forward_auth_bad_original",
            "the original URI is not an origin-form path",
            "send the request URI as received (nginx: $request_uri)",
        )
    path, _, query = uri.partition("?")
    return Original(method, path, query, URL(_origin(request) + uri))


def _origin(request: Request) -> str:
    """``scheme://host`` the payer used: from the proxy, else the subrequest's own."""
    h = request.headers
    proto = (_first(h.get("x-forwarded-proto")) or request.url.scheme).lower()
    host = _first(h.get("x-forwarded-host")) or h.get("host") or request.url.netloc
    if proto not in ("http", "https") or not _HOST.fullmatch(host):
        raise _bad(
            "forward_auth_bad_host",
            "the forwarded scheme or host is malformed",
            "send X-Forwarded-Proto http|https and X-Forwarded-Host as the payer sent Host",
        )
    return f"{proto}://{host}"


def _invoice_url(request: Request) -> str:
    """Where the payer creates an invoice: under ``WATCHER_PUBLIC_URL`` when set, else at
    the origin the proxy says the payer used. (The resource stays the proxy's: it is the
    merchant's URL, which need not be ours.)"""
    if public_url.configured(request.app.state.settings) is not None:
        return public_url.of_route(request, "create_invoice")
    return _origin(request) + URL(str(request.url_for("create_invoice"))).path


def _check_peer(request: Request) -> None:
    peer = request.client.host if request.client else None
    addr = clientip.parse_ip(peer) if peer else None
    proxies = request.app.state.settings.trusted_proxies()
    if addr is None or not any(addr.version == n.version and addr in n for n in proxies):
        raise ApiError(
            403,
            "forward_auth_untrusted_peer",
            "only a trusted proxy may ask for authorization",
            "add the proxy's address to WATCHER_TRUSTED_PROXIES, and keep /gateway/authorize "
            "unreachable for payers (docs/gateway.md, Forward-auth mode)",
        )


async def _decide(request: Request) -> tuple[gate.Charge, dict[str, str]]:
    _check_peer(request)
    config: GatewayConfig = request.app.state.gateway
    orig = original(request)
    gate.check_path(orig.path)
    found = config.find(orig.method, orig.path)
    if found is None:
        raise ApiError(
            404,
            "no_route",
            f"no gateway route for {orig.method} {orig.path}",
            "check the method and path against the gateway's routes",
        )
    route, params = found
    state = request.app.state
    client = ratelimit.client_id(request)
    charged = await common.charge(
        state,
        route,
        orig.url,
        request.headers,
        request.scope.setdefault("state", {}),
        client=client,
        invoice_url=_invoice_url(request),
    )
    upstream = config.upstreams[route.upstream]
    out = common.upstream_headers(
        charged,
        orig.method,
        route.target(params, orig.query),
        common.UNSIGNED_PAYLOAD,
        common.secret_for(state.settings, upstream),
    )
    authorization = request.headers.get("authorization")
    if authorization and entitlements.bearer_key(authorization) is None:
        out["Authorization"] = authorization  # not a payment: the upstream may see it
    return charged, out


def _as_nginx(exc: ApiError) -> Response:
    """A refusal nginx can pass on: 401 carrying the status, body and payer headers."""
    body = json.dumps(jsonable_encoder(exc.body()), separators=(",", ":"), ensure_ascii=True)
    headers = {REFUSAL_STATUS: str(exc.status), REFUSAL_BODY: body}
    headers.update({k: v for k, v in exc.headers.items() if k in PAYER_HEADERS})
    return Response(status_code=401, headers=headers)


@router.api_route(PATH, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@router.api_route(
    PATH + "/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
)
async def authorize(request: Request) -> Response:
    """Charge the call the proxy describes; 200 with the upstream's headers, else why not."""
    try:
        charged, headers = await _decide(request)
    except ApiError as exc:
        if request.headers.get(NGINX_HEADER, "").lower() == "nginx":
            return _as_nginx(exc)
        raise
    headers.update(charged.headers)  # PAYMENT-RESPONSE, Cache-Control: for the payer
    return Response(status_code=200, headers=headers)


def mount(app: FastAPI) -> None:
    """Serve ``/gateway/authorize`` on ``app`` (only when it has a gateway file)."""
    app.include_router(router)
