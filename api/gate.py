"""The one decision a paid call goes through, wherever it arrives.

A FastAPI route (``paywall.paid``), a gateway route (``api/gateway/``), the
forward-auth endpoint and the charge endpoint for backends all describe the call
as a :class:`Call` (the payer's headers, what was asked: resource, price, rails,
tiers) and get a :class:`Charge` back, or an :class:`~api.errors.ApiError`
(402 saying how to pay, 400 for a malformed payment header, 429, 503):

* an x402 header (``PAYMENT-SIGNATURE`` / ``X-PAYMENT``): verified and settled
  once, for the route's price in base units (``api/x402/pay.py``);
* else ``x-payment-token``: one statement charges the route's calls to the token;
* else ``Authorization: Bearer <subscriber key>``: one statement meters the
  calls against the subscription, of an allowed tier;
* else 402. A rail the route does not take is refused as plainly as no payment.

Database trouble is a 503, never a free call. What the call was charged is left
in the ASGI scope's state so ``paywall.RefundOn5xx`` can give it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from x402.schemas import SettleResponse

from api import entitlements, idempotency, payment_required, text
from api.errors import DB_ERRORS, ApiError, service_unavailable
from api.x402 import errors as x402_errors
from api.x402 import offers, pay
from api.x402.clients import Clients
from watcher import db, metrics, money
from watcher.settings import Settings

log = structlog.get_logger(__name__)

MAX_TOKEN_CHARS = 128
DB_TIMEOUT_SECONDS = 5.0
CHARGE_KEY = "x402_charge"  # scope state: the token usage row a 5xx refunds
SUBSCRIBER_CHARGE_KEY = "subscriber_charge"  # scope state: the subscriber usage row
SUSPENDED_MESSAGE = (
    "this payment token is suspended: the payment that bought it left the canonical chain "
    "after it was credited (a reorg); calls resume once the same transfer is included again "
    "and confirmed"
)
_RAIL_HEADERS = {
    "token": payment_required.TOKEN_HEADER,
    "x402": f"{offers.PAYMENT_SIGNATURE} or {offers.X_PAYMENT}",
    "subscription": "Authorization: Bearer <subscriber key>",
}


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call was charged, on which rail, and what to tell the upstream."""

    token_id: int  # the token's, subscriber key's, or x402 settlement's id
    remaining: int
    expires_at: datetime
    usage_id: int | None  # None for subscriber and x402 calls
    via: str = "x402"  # or "subscription", or the x402 settlement's kind
    tier: str | None = None
    rail: str = "token"  # token, x402 or subscription
    payer: str = ""  # x402: the payer's address; else token:<id> / subscriber:<id>
    charge_id: str = ""  # unique per charged call (the upstream's replay key)
    headers: dict[str, str] = field(default_factory=dict)  # for the payer (PAYMENT-RESPONSE)


@dataclass(frozen=True, slots=True)
class Call:
    """One call to charge: the app's state, what was asked, the payer's headers."""

    state: Any  # the app's ``state``: settings, pool, clients
    asked: payment_required.Asked
    endpoint: str  # the route's template: metric label and usage rows
    headers: Mapping[str, str]  # the payer's request headers (case-insensitive)
    scope_state: dict[str, Any]  # the ASGI scope's state: refund and idempotency keys
    fingerprint: Callable[[], Awaitable[bytes]] | None = None  # Idempotency-Key binding

    @property
    def settings(self) -> Settings:
        settings: Settings = self.state.settings
        return settings

    @property
    def pool(self) -> db.Pool:
        pool: db.Pool = self.state.pool
        return pool


def token_hash(token: str) -> bytes:
    """SHA-256 of the token as the client sends it: the only form the server keeps."""
    return hashlib.sha256(token.encode("utf-8")).digest()


async def charge(call: Call) -> Charge:
    """Charge ``call`` on the rail its headers choose; raises ApiError (402/400/429/503)."""
    h = call.headers
    v2, v1 = h.get(offers.PAYMENT_SIGNATURE), h.get(offers.X_PAYMENT)
    token = h.get(payment_required.TOKEN_HEADER)
    if v2 or v1:  # a standard x402 client paying this call
        await _require_rail(call, "x402")
        return await _pay_x402(call, v2, v1)
    if not token:
        key = entitlements.bearer_key(h.get("authorization"))
        if key is not None:
            await _require_rail(call, "subscription", calls=True)
            return await _meter_subscriber(call, key)
        price = call.asked.price
        raise await payment_refused(
            call,
            "payment_required",
            f"this route costs ${_usd(call)} a call"
            + (f" ({price.calls} paid call(s))" if price.calls is not None else ""),
        )
    await _require_rail(call, "token", calls=True)
    if len(token) > MAX_TOKEN_CHARS:
        raise await payment_refused(call, "invalid_token", "this payment token is unknown")
    key = h.get(idempotency.HEADER)
    if key is not None:  # checked before any query (a NUL is a 400)
        idempotency.check_key(key)
    charged = await _meter(call, token, key)
    call.scope_state[CHARGE_KEY] = charged.usage_id
    if key is not None:  # idempotency.StoreAnswers keeps the answer
        call.scope_state[idempotency.STATE_KEY] = charged.usage_id
    metrics.METERED_CALLS.labels("served").inc()
    return charged


def _usd(call: Call) -> str:
    return money.usd(call.asked.price.units)


async def _require_rail(call: Call, rail: str, *, calls: bool = False) -> None:
    """402 when the route does not take this rail (or, for calls, has no whole-call price)."""
    asked = call.asked
    if rail in asked.rails and (not calls or asked.price.calls is not None):
        return
    taken = [r for r in sorted(asked.rails) if r != "token" or asked.price.calls is not None]
    how = "; ".join(f"{r} ({_RAIL_HEADERS[r]})" for r in taken) or "none"
    raise await payment_refused(
        call, "rail_not_accepted", f"this route does not take {rail} payments; it takes: {how}"
    )


async def payment_refused(call: Call, error: str, message: str, status: int = 402) -> ApiError:
    """The 402 (or ``status``) for this call: what to pay, where, on the route's rails."""
    metrics.PAYMENT_REQUIRED.labels(call.endpoint).inc()
    metrics.METERED_CALLS.labels("refused").inc()
    ways = await _ways_to_pay(call)
    return payment_required.refusal(call.settings, call.asked, error, message, ways, status=status)


async def _ways_to_pay(call: Call) -> dict[str, Any]:
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS), call.pool.acquire() as conn:
            return await entitlements.how_to_pay(conn, call.settings)
    except DB_ERRORS as exc:  # the 402 still says how; only the tier numbers are missing
        log.warning("paywall_tiers_unavailable", error=repr(exc))
        return entitlements.ways_to_pay(call.settings, None)


def _failed_response(version: int, exc: x402_errors.Refused) -> dict[str, str]:
    """The spec's PAYMENT-RESPONSE with success false, for a refusal that has none yet
    (a verification failure: nothing reached the chain)."""
    if any(
        k.lower() in (offers.PAYMENT_RESPONSE.lower(), offers.X_PAYMENT_RESPONSE.lower())
        for k in exc.headers
    ):
        return {}
    failed = SettleResponse(
        success=False,
        error_reason=exc.reason,
        error_message=exc.message,
        transaction="",
        network="",
    )
    return offers.response_header(version, failed)


async def _pay_x402(call: Call, v2: str | None, v1: str | None) -> Charge:
    """A standard x402 payment header for the route's price: verify, settle, then serve
    once (api/x402/pay.py)."""
    version, header = (2, v2) if v2 else (1, v1 or "")
    clients: Clients = call.state.clients
    asked = call.asked
    try:
        settled = await pay.settle(clients, call.pool, asked.url, header, version, asked.price)
    except x402_errors.Refused as exc:
        refusal = await payment_refused(call, exc.reason, exc.message, exc.status)
        refusal.headers.update(exc.headers)
        refusal.headers.update(_failed_response(version, exc))
        raise refusal from exc
    metrics.METERED_CALLS.labels("served").inc()
    # A settled answer is this payer's alone: shared caches must not keep it.
    headers = {**settled.headers, "Cache-Control": "private"}
    return Charge(
        token_id=settled.authorization_id,
        remaining=0,
        expires_at=datetime.now(UTC),
        usage_id=None,
        via=settled.via,  # token_id: the x402_authorizations or x402_solana_settlements id
        rail="x402",
        payer=settled.payer,
        charge_id=f"x402_{settled.network}_{settled.authorization_id}",
        headers=headers,
    )


async def _meter_subscriber(call: Call, key: str) -> Charge:
    settings = call.settings
    calls = call.asked.price.calls or 1  # _require_rail made sure it is whole
    grace = timedelta(hours=settings.stripe_past_due_grace_hours)
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS), call.pool.acquire() as conn:
            check = await entitlements.consume_subscriber_key(
                conn, key, calls, call.endpoint, grace=grace, tiers=call.asked.tiers
            )
    except DB_ERRORS as exc:
        log.warning("paywall_db_error", error=repr(exc))
        raise service_unavailable("metering") from exc
    if check.ok and check.key_id is not None:
        metrics.METERED_CALLS.labels("served").inc()
        call.scope_state[SUBSCRIBER_CHARGE_KEY] = check.usage_id
        return Charge(
            token_id=check.key_id,
            remaining=check.remaining or 0,
            expires_at=check.period_end or datetime.now(UTC),
            usage_id=None,
            via="subscription",
            tier=check.tier,
            rail="subscription",
            payer=f"subscriber:{check.key_id}",
            charge_id=f"sub_{check.usage_id}",
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
    raise await payment_refused(call, f"subscription_{check.reason}", check.detail)


async def _why_refused(pool: db.Pool, digest: bytes, calls: int) -> tuple[str, str]:
    row = await pool.fetchrow(db.q("api_token_status"), digest)
    if row is None:
        return "invalid_token", "this payment token is unknown"
    if not row["alive"]:
        return "token_expired", f"this payment token expired at {row['expires_at'].isoformat()}"
    if row["suspended_reason"] is not None:
        return f"token_suspended_{row['suspended_reason']}", SUSPENDED_MESSAGE
    return "token_exhausted", f"this payment token has {row['remaining']} calls left; needs {calls}"


def _charge_from(row: asyncpg.Record | None) -> Charge | None:
    if row is None:
        return None
    return Charge(
        token_id=row["token_id"],
        remaining=row["remaining"],
        expires_at=row["expires_at"],
        usage_id=row["usage_id"],
        rail="token",
        payer=f"token:{row['token_id']}",
        charge_id=f"tok_{row['usage_id']}",
    )


async def _charge_token(
    pool: db.Pool, digest: bytes, calls: int, endpoint: str, keyed: tuple[str, bytes] | None
) -> Charge | None:
    if keyed is None:
        return _charge_from(await pool.fetchrow(db.q("api_meter"), digest, calls, endpoint))
    key, request_hash = keyed
    async with pool.acquire() as conn:
        row = await idempotency.charge(conn, digest, calls, endpoint, key, request_hash)
    return _charge_from(row)


async def _meter(call: Call, token: str, key: str | None) -> Charge:
    pool = call.pool
    calls = call.asked.price.calls or 1  # _require_rail made sure it is whole
    digest = token_hash(token)
    keyed = None
    if key is not None:
        if call.fingerprint is None:
            raise ApiError(
                400,
                "idempotency_not_supported",
                f"this endpoint takes no {idempotency.HEADER}",
                f"send the call without the {idempotency.HEADER} header",
            )
        keyed = (key, await call.fingerprint())
    try:
        async with asyncio.timeout(DB_TIMEOUT_SECONDS):
            charged = await _charge_token(pool, digest, calls, call.endpoint, keyed)
            if charged is not None:
                return charged
            error, message = await _why_refused(pool, digest, calls)
    except DB_ERRORS as exc:
        log.warning("paywall_db_error", error=repr(exc))
        raise service_unavailable("metering") from exc
    raise await payment_refused(call, error, message)


def check_path(path: str, query: str = "") -> None:
    """400 for a NUL in the path or query: both are stored with an x402 settlement (its
    resource URL), so they are refused before any query or payment, not a database error."""
    for part, what in ((path, "path"), (urllib.parse.unquote(query), "query string")):
        if text.problem(part) is not None:
            raise ApiError(
                400,
                "invalid_path",
                f"the {what} contains a NUL character",
                f"remove the %00 from the {what}",
            )
