"""What the gateway's modes share: a configured route turned into a charged call, and the
headers the upstream receives (docs/gateway.md, "What the upstream receives").

* :func:`charge` runs the route's rate limit, then the one paid-call decision
  (``api/gate.py``) at the route's price, rails and tiers; a free route is a
  :class:`gate.Charge` on the ``free`` rail with a fresh charge id.
* :func:`upstream_headers` is what the gateway adds: who paid and how, and an
  HMAC over method, path with query, charge id, timestamp and body hash, so the
  upstream can refuse a call that did not come through us, a replay onto
  another route, and a second use of one charge id.
* :func:`forwardable` is what it keeps of the payer's headers: never the payment
  itself (token, x402 payload, subscriber key), never a client's own copy of our
  ``X-Payment-*`` headers, never hop-by-hop headers (RFC 9110 section 7.6.1).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import URL

from api import entitlements, gate, payment_required, ratelimit
from api.price import Price
from api.x402 import offers
from watcher import gateway_config
from watcher.gateway_config import Route, Upstream
from watcher.settings import Settings

SIGNATURE_VERSION = "x402-gateway-v1"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
OUR_PREFIX = "x-payment-"  # every header we add starts so; a client's copies are dropped
# RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "trailer",
    }
)
# The payment itself: the upstream learns who paid from our headers, never the secret.
PAYMENT_HEADERS = frozenset(
    {
        payment_required.TOKEN_HEADER,
        offers.PAYMENT_SIGNATURE.lower(),
        offers.X_PAYMENT.lower(),
        "idempotency-key",  # ours to keep: the upstream is called once per charge
    }
)
# Set by the proxy itself: the upstream's host and the body's framing.
RECOMPUTED = frozenset({"host", "content-length"})
# Headers some frameworks (Symfony, IIS, Express method-override) obey to change the
# method or path after we charged and signed another: never forwarded.
OVERRIDES = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    }
)


def price_of(route: Route) -> Price:
    """The route's price as the paywall sees it (a free route has none)."""
    return Price(route.price_units, route.calls)


def asked(route: Route, url: URL, invoice_url: str) -> payment_required.Asked:
    """What a call to ``route`` asks for: the resource at ``url``, its price, rails, tiers."""
    return payment_required.Asked(
        url=url,
        invoice_url=invoice_url,
        price=price_of(route),
        rails=route.rails,
        tiers=route.tiers,
    )


def free_charge() -> gate.Charge:
    """A free route's call: nothing charged, a fresh charge id for the upstream's log."""
    return gate.Charge(
        token_id=0,
        remaining=0,
        expires_at=datetime.now(UTC),
        usage_id=None,
        via="free",
        rail=gateway_config.FREE_RAIL,
        charge_id=f"free_{uuid.uuid4().hex}",
    )


async def charge(
    state: Any,
    route: Route,
    url: URL,
    headers: Mapping[str, str],
    scope_state: dict[str, Any],
    *,
    client: str,
    invoice_url: str,
    fingerprint: Callable[[], Awaitable[bytes]] | None = None,
) -> gate.Charge:
    """Rate-limit, then charge one call of ``route`` (or pass a free one); raises ApiError."""
    if route.rate_limit_per_minute is not None:
        await ratelimit.hit(
            state.pool, f"gateway:{route.label}", client, route.rate_limit_per_minute
        )
    if route.free:
        return free_charge()
    call = gate.Call(
        state=state,
        asked=asked(route, url, invoice_url),
        endpoint=route.label,
        headers=headers,
        scope_state=scope_state,
        fingerprint=fingerprint,
    )
    return await gate.charge(call)


def body_digest(body: bytes | None) -> str:
    """The ``X-Payment-Body-SHA256`` value: hex SHA-256, or unsigned for a streamed upload."""
    return UNSIGNED_PAYLOAD if body is None else hashlib.sha256(body).hexdigest()


def canonical(timestamp: int, method: str, target: str, charge_id: str, body_hash: str) -> bytes:
    """The six lines the signature covers (docs/gateway.md)."""
    lines = (SIGNATURE_VERSION, str(timestamp), method.upper(), target, charge_id, body_hash)
    return "\n".join(lines).encode("utf-8")


def sign(secret: bytes, message: bytes) -> str:
    return "v1=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


def secret_for(settings: Settings, upstream: Upstream) -> bytes | None:
    """The upstream's own secret, else ``WATCHER_GATEWAY_SECRET``; None: calls go unsigned."""
    if upstream.secret is not None:
        return upstream.secret
    shared = settings.watcher_gateway_secret
    return shared.get_secret_value().encode("utf-8") if shared is not None else None


def upstream_headers(
    charged: gate.Charge,
    method: str,
    target: str,
    body_hash: str,
    secret: bytes | None,
    *,
    now: float | None = None,
) -> dict[str, str]:
    """Who paid, how, and the signature binding it to this method, path and body."""
    timestamp = int(time.time() if now is None else now)
    out = {
        "X-Payment-Rail": charged.rail,
        "X-Payment-Payer": charged.payer,
        "X-Payment-Charge-Id": charged.charge_id,
        "X-Payment-Remaining": str(charged.remaining),
        "X-Payment-Timestamp": str(timestamp),
        "X-Payment-Body-SHA256": body_hash,
    }
    if charged.tier is not None:
        out["X-Payment-Tier"] = charged.tier
    if secret is not None:
        message = canonical(timestamp, method, target, charged.charge_id, body_hash)
        out["X-Payment-Signature"] = sign(secret, message)
    return out


def forwardable(headers: Iterable[tuple[str, str]], rail: str) -> list[tuple[str, str]]:
    """The payer's headers the upstream may see (names lower-case, order kept)."""
    pairs = [(k.lower(), v) for k, v in headers]
    named_by_connection = {
        token.strip().lower()
        for k, v in pairs
        if k == "connection"
        for token in v.split(",")
        if token.strip()
    }
    kept = []
    for name, value in pairs:
        if name in HOP_BY_HOP or name in named_by_connection or name in RECOMPUTED:
            continue
        # Some servers read ``X_Payment_Rail`` as ``X-Payment-Rail``: judge the dashed form.
        dashed = name.replace("_", "-")
        if dashed in PAYMENT_HEADERS or dashed.startswith(OUR_PREFIX) or dashed in OVERRIDES:
            continue
        if dashed == "authorization" and (
            rail == "subscription"
            or entitlements.bearer_key(value) is not None
            or entitlements.KEY_PREFIX in value  # any spelling: a key is never forwarded
        ):
            continue  # a subscriber key is a payment: never the upstream's to see
        kept.append((name, value))
    return kept
