"""The paywall: ``Depends(paywall.paid())`` on a route charges one call to an access token.

* The token travels in ``x-payment-token``; the server knows only its SHA-256.
* One statement decrements ``remaining`` only when enough is left and the
  token is alive, and records the usage row: concurrent calls never overdraw.
* ``Idempotency-Key`` (``api/idempotency.py``): a retry of the same request
  gets the stored answer without running the handler; another request under
  the key is 422, one still running 409. A retry is safe, never free.
* :class:`RefundOn5xx` (ASGI middleware) gives the unit back when the handler
  raises or answers 5xx; the key is released so a retry is charged normally.
* A route's price (``paid(cost)``) is its price on every rail: token units,
  subscriber quota, and the amount the x402 offers ask and verify.
* Standard x402 clients: every 402 also carries the v2 ``PAYMENT-REQUIRED``
  header; a ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` header is verified and
  settled once before the call is served (the ``api/x402/`` package,
  docs/x402.md).
* Missing, unknown, expired or exhausted token: 402 with the x402 v1 body
  (what to pay, where) plus our invoice endpoint, worded by
  ``api/payment_required.py``. Database trouble: 503, never a free call.
* The other way to pay: ``Authorization: Bearer <subscriber key>`` (a Stripe
  subscription, ``api/entitlements.py``). The same dependency decides: a
  payment token when one is sent, else a subscriber key, else 402; both are
  metered by one statement each, and every 402 lists both ways to pay
  (``ways_to_pay``). A subscriber call that ends in 5xx is not counted
  either; subscriber calls have no Idempotency-Key replay (the quota is
  monthly, not money per call).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Header, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import entitlements, idempotency, payment_required, text
from api.errors import DB_ERRORS, ERROR_SCHEMA, ApiError, responses, service_unavailable
from api.x402 import errors as x402_errors
from api.x402 import offers, pay
from api.x402.clients import Clients
from watcher import db, metrics
from watcher.settings import Settings

log = structlog.get_logger(__name__)

MAX_TOKEN_CHARS = 128
DB_TIMEOUT_SECONDS = 5.0
_CHARGE_KEY = "x402_charge"
SUSPENDED_MESSAGE = (
    "this payment token is suspended: the payment that bought it left the canonical chain "
    "after it was credited (a reorg); calls resume once the same transfer is included again "
    "and confirmed"
)
_SUBSCRIBER_CHARGE_KEY = "subscriber_charge"

RESPONSES: dict[int | str, dict[str, Any]] = {
    402: {
        "description": "Payment required: no usable token. The body says how to pay (x402 v1).",
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    },
    **responses(503),
}


@dataclass(frozen=True, slots=True)
class Charge:
    """What the paywall charged for this call."""

    token_id: int
    remaining: int
    expires_at: datetime
    usage_id: int | None  # None for subscriber and x402 calls
    via: str = "x402"  # or "subscription": token_id is then the subscriber key's id
    tier: str | None = None


def token_hash(token: str) -> bytes:
    """SHA-256 of the token as the client sends it: the only form the server keeps."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def route_template(request: Request) -> str:
    """``/items/{id}`` rather than ``/items/42``: bounded metric labels and usage stats."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


async def _payment_required(request: Request, error: str, message: str, cost: int) -> ApiError:
    metrics.PAYMENT_REQUIRED.labels(route_template(request)).inc()
    metrics.METERED_CALLS.labels("refused").inc()
    return payment_required.refusal(request, error, message, cost, await _ways_to_pay(request))


async def _pay_x402(
    request: Request, response: Response, cost: int, v2: str | None, v1: str | None
) -> Charge:
    """A standard x402 payment header for ``cost`` calls' price: verify, settle, then
    serve once (api/x402/pay.py)."""
    version, header = (2, v2) if v2 else (1, v1 or "")
    clients: Clients = request.app.state.clients
    pool: db.Pool = request.app.state.pool
    try:
        settled = await pay.settle(clients, pool, request.url, header, version, cost)
    except x402_errors.Refused as exc:
        refusal = await _payment_required(request, exc.reason, exc.message, cost)
        refusal.headers.update(exc.headers)
        raise refusal from exc
    response.headers.update(settled.headers)
    metrics.METERED_CALLS.labels("served").inc()
    return Charge(
        token_id=settled.authorization_id,
        remaining=0,
        expires_at=datetime.now(UTC),
        usage_id=None,
        via=settled.via,  # token_id: the x402_authorizations or x402_solana_settlements id
    )


async def _ways_to_pay(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    pool: db.Pool = request.app.state.pool
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS), pool.acquire() as conn:
            return await entitlements.how_to_pay(conn, settings)
    except DB_ERRORS as exc:  # the 402 still says how; only the tier numbers are missing
        log.warning("paywall_tiers_unavailable", error=repr(exc))
        return entitlements.ways_to_pay(settings, None)


async def _meter_subscriber(request: Request, key: str, cost: int) -> Charge:
    settings: Settings = request.app.state.settings
    pool: db.Pool = request.app.state.pool
    grace = timedelta(hours=settings.stripe_past_due_grace_hours)
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS), pool.acquire() as conn:
            check = await entitlements.consume_subscriber_key(
                conn, key, cost, route_template(request), grace=grace
            )
    except DB_ERRORS as exc:
        log.warning("paywall_db_error", error=repr(exc))
        raise service_unavailable("metering") from exc
    if check.ok and check.key_id is not None:
        metrics.METERED_CALLS.labels("served").inc()
        request.scope.setdefault("state", {})[_SUBSCRIBER_CHARGE_KEY] = check.usage_id
        return Charge(
            token_id=check.key_id,
            remaining=check.remaining or 0,
            expires_at=check.period_end or datetime.now(UTC),
            usage_id=None,
            via="subscription",
            tier=check.tier,
        )
    if check.status_code == 429:
        metrics.METERED_CALLS.labels("refused").inc()
        raise ApiError(
            429,
            "rate_limited",
            check.detail,
            "wait for the next minute or upgrade the tier",
            headers={"Retry-After": str(60 - datetime.now(UTC).second)},
        )
    raise await _payment_required(request, f"subscription_{check.reason}", check.detail, cost)


async def _why_refused(pool: db.Pool, digest: bytes, cost: int) -> tuple[str, str]:
    row = await pool.fetchrow(db.q("api_token_status"), digest)
    if row is None:
        return "invalid_token", "this payment token is unknown"
    if not row["alive"]:
        return "token_expired", f"this payment token expired at {row['expires_at'].isoformat()}"
    if row["suspended_reason"] is not None:
        return f"token_suspended_{row['suspended_reason']}", SUSPENDED_MESSAGE
    return "token_exhausted", f"this payment token has {row['remaining']} calls left; needs {cost}"


def _charge_from(row: asyncpg.Record | None) -> Charge | None:
    if row is None:
        return None
    return Charge(
        token_id=row["token_id"],
        remaining=row["remaining"],
        expires_at=row["expires_at"],
        usage_id=row["usage_id"],
    )


async def _charge(
    pool: db.Pool,
    digest: bytes,
    cost: int,
    endpoint: str,
    keyed: tuple[str, bytes] | None,
) -> Charge | None:
    if keyed is None:
        return _charge_from(await pool.fetchrow(db.q("api_meter"), digest, cost, endpoint))
    key, request_hash = keyed
    async with pool.acquire() as conn:
        row = await idempotency.charge(conn, digest, cost, endpoint, key, request_hash)
    return _charge_from(row)


async def _meter(request: Request, token: str, cost: int, key: str | None) -> Charge:
    pool: db.Pool = request.app.state.pool
    digest = token_hash(token)
    keyed = None if key is None else (key, await idempotency.fingerprint(request))
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            charge = await _charge(pool, digest, cost, route_template(request), keyed)
            if charge is not None:
                return charge
            error, message = await _why_refused(pool, digest, cost)
    except DB_ERRORS as exc:
        log.warning("paywall_db_error", error=repr(exc))
        raise service_unavailable("metering") from exc
    raise await _payment_required(request, error, message, cost)


def paid(cost: int = 1) -> Any:
    """A dependency charging ``cost`` calls to the request's token (402/503 otherwise)."""

    async def dependency(
        request: Request,
        response: Response,
        x_payment_token: Annotated[str | None, Header(alias=payment_required.TOKEN_HEADER)] = None,
        idempotency_key: Annotated[str | None, Header(alias=idempotency.HEADER)] = None,
        authorization: Annotated[str | None, Header()] = None,
        payment_signature: Annotated[str | None, Header(alias=offers.PAYMENT_SIGNATURE)] = None,
        x_payment: Annotated[str | None, Header(alias=offers.X_PAYMENT)] = None,
    ) -> Charge:
        # The path is stored with an x402 settlement (its resource URL): a %00 in a path
        # parameter is a 400 here, before any query or payment, not a database error.
        if text.problem(request.url.path) is not None:
            raise ApiError(
                400,
                "invalid_path",
                "the path contains a NUL character",
                "remove the %00 from the path",
            )
        if payment_signature or x_payment:  # a standard x402 client paying this call
            return await _pay_x402(request, response, cost, payment_signature, x_payment)
        # The one decision: a payment token if sent, else a subscriber key, else 402.
        if not x_payment_token:
            key = entitlements.bearer_key(authorization)
            if key is not None:
                return await _meter_subscriber(request, key, cost)
            raise await _payment_required(
                request, "payment_required", f"this route costs {cost} paid call(s)", cost
            )
        if len(x_payment_token) > MAX_TOKEN_CHARS:
            raise await _payment_required(
                request, "invalid_token", "this payment token is unknown", cost
            )
        if idempotency_key is not None:  # checked before any query (a NUL is a 400)
            idempotency.check_key(idempotency_key)
        charge = await _meter(request, x_payment_token, cost, idempotency_key)
        state = request.scope.setdefault("state", {})
        state[_CHARGE_KEY] = charge.usage_id
        if idempotency_key is not None:  # idempotency.StoreAnswers keeps the answer
            state[idempotency.STATE_KEY] = charge.usage_id
        metrics.METERED_CALLS.labels("served").inc()
        return charge

    return Depends(dependency)


class RefundOn5xx:
    """Give the charged unit back when the handler raises or answers 5xx."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        status, delivered = 0, False

        async def watch(message: Message) -> None:
            nonlocal status, delivered
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                delivered = True

        try:
            await self.app(scope, receive, watch)
        except Exception:
            # A failure after the whole answer went out (a background task) refunds
            # nothing: the client was served, and a refund would make the call free.
            if not delivered or status >= 500:
                await self._refund(scope, state, 500)
            raise
        if status >= 500:
            await self._refund(scope, state, status)

    async def _refund(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        query, usage_id = "api_refund", state.pop(_CHARGE_KEY, None)
        if usage_id is None:
            query, usage_id = "stripe_refund_usage", state.pop(_SUBSCRIBER_CHARGE_KEY, None)
        if usage_id is None:
            return
        pool: db.Pool = scope["app"].state.pool
        try:
            async with asyncio.timeout(DB_TIMEOUT_SECONDS):
                await pool.fetchval(db.q(query), usage_id, status)
        except DB_ERRORS as exc:  # the payer loses one unit; never the reverse
            log.error("refund_failed", usage_id=usage_id, error=repr(exc))
            return
        metrics.METERED_CALLS.labels("refunded").inc()


router = APIRouter(tags=["paid"])


@router.get(
    "/x402/example/paid",
    summary="An example paid route: one call from your token",
    responses=RESPONSES,
)
async def example_paid(charge: Annotated[Charge, paid()]) -> dict[str, Any]:
    return {
        "result": "paid content",
        "remaining": charge.remaining,
        "expires_at": charge.expires_at.isoformat(),
    }


@router.get("/x402/example/free", summary="The same route without a paywall (for comparison)")
async def example_free() -> dict[str, Any]:
    return {"result": "free content"}
