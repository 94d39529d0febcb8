"""The Stripe rail over HTTP: webhook, checkout, key claim, portal, invoices.

Every refusal is JSON ``{"error": code, "message": what was wrong and what to do}``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

import asyncpg
import stripe
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api import entitlements, subscriptions, text
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.stripe_client import StripeBilling
from watcher import db, errors, keys, metrics
from watcher.settings import Settings, is_placeholder

log = structlog.get_logger(__name__)
router = APIRouter(tags=["stripe"])

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
_DB_ERRORS = DB_ERRORS  # the API's one list: a killed session is a 503 here too


def problem(status: int, error: str, message: str, fix: str, **extra: Any) -> JSONResponse:
    """A refusal in the API's one error shape: code, what was wrong, what to do."""
    headers = {}
    if "retry_after" in extra:
        headers["Retry-After"] = str(max(1, int(extra["retry_after"])))
    return ApiError(status, error, message, fix, headers=headers, **extra).response()


Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[JSONResponse]])


def db_guarded(endpoint: Endpoint) -> Endpoint:
    """Database trouble is a 503 the client can retry, never a 500."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> JSONResponse:
        try:
            return await endpoint(*args, **kwargs)
        except _DB_ERRORS as exc:
            log.warning("stripe_route_db_error", error=repr(exc))
            return service_unavailable("the database").response()

    return cast(Endpoint, run)


def enabled(settings: Settings) -> bool:
    """The rail is on when a Stripe key or webhook secret is set (routes are mounted then)."""
    return any(
        v is not None and not is_placeholder(v.get_secret_value())
        for v in (settings.stripe_secret_key, settings.stripe_webhook_secret)
    )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def billing(request: Request) -> StripeBilling:
    """The app's one Stripe client, made on first use (tests install their own first)."""
    client: StripeBilling | None = getattr(request.app.state, "billing", None)
    if client is None:
        client = StripeBilling(_settings(request))
        request.app.state.billing = client
    return client


def _billing_problem(exc: errors.BillingError) -> JSONResponse:
    if isinstance(exc, errors.BillingUnavailable):
        if exc.retry_after is not None:
            return problem(
                503,
                "billing_unavailable",
                str(exc),
                "retry after the Retry-After delay",
                retry_after=exc.retry_after,
            )
        return problem(502, "billing_unavailable", str(exc), "retry later; nothing was charged")
    if isinstance(exc, errors.BillingRejected) and exc.card_error:
        return problem(402, "card_declined", str(exc), "use another card", code=exc.code)
    return problem(502, "billing_rejected", str(exc), "the operator must check the Stripe setup")


class CheckoutRequest(BaseModel):
    """Subscribe ``email`` to ``tier`` (pro, team or enterprise)."""

    model_config = ConfigDict(extra="forbid")

    tier: text.SafeStr = Field(min_length=1, max_length=32, examples=["pro"])
    # The email is stored before Stripe sees it: a NUL in it is a 422, not a 503.
    email: text.SafeStr = Field(min_length=3, max_length=254, examples=["you@example.com"])


class ClaimRequest(BaseModel):
    """The claim secret that checkout answered."""

    model_config = ConfigDict(extra="forbid")

    claim_secret: text.SafeStr = Field(min_length=1, max_length=128)


_CLAIM_FIX = {
    404: "use the claim_secret that checkout returned",
    409: "retry in a few seconds if payment is still completing; a key is shown only once",
    410: "start a new checkout",
}


@router.post("/api/v1/webhooks/stripe", summary="Stripe events (signed)")
async def stripe_webhook(request: Request) -> JSONResponse:
    settings = _settings(request)
    secret = settings.stripe_webhook_secret
    if secret is None or is_placeholder(secret.get_secret_value()):
        return problem(
            503, "webhook_not_configured", "no webhook secret", "set STRIPE_WEBHOOK_SECRET"
        )
    payload = await request.body()
    try:
        stripe.Webhook.construct_event(
            payload, request.headers.get("stripe-signature"), secret.get_secret_value()
        )
        event = json.loads(payload)
    except (stripe.SignatureVerificationError, ValueError) as exc:
        metrics.STRIPE_WEBHOOKS.labels("bad_signature").inc()
        log.warning("stripe_webhook_refused", error=type(exc).__name__)
        return problem(
            400,
            "bad_signature",
            "Stripe-Signature missing, stale or wrong; nothing stored",
            "send events signed with this endpoint's secret (STRIPE_WEBHOOK_SECRET)",
        )
    try:
        outcome = await subscriptions.process_event(
            request.app.state.pool, event, subscriptions.price_tiers(settings)
        )
    except subscriptions.APPLY_ERRORS:
        return problem(
            500,
            "apply_failed",
            "the event was not applied and is not marked processed",
            "nothing to do: Stripe delivers it again; see stripe_event_failures",
        )
    return JSONResponse({"received": True, "outcome": outcome})


@router.post(
    "/api/v1/payments/checkout",
    summary="Start a subscription (Stripe Checkout)",
    status_code=201,
    responses=responses(400, 402, 413, 422, 503),
)
@db_guarded
async def checkout(request: Request, body: CheckoutRequest) -> JSONResponse:
    settings = _settings(request)
    prices = {tier: price for price, tier in subscriptions.price_tiers(settings).items()}
    tier, email = body.tier, body.email
    if tier not in prices:
        return problem(
            400,
            "unknown_tier",
            f"tier must be one of {sorted(prices)}",
            'send {"tier": "pro", "email": "you@example.com"}',
            tiers=sorted(prices),
        )
    if not _EMAIL.match(email):
        return problem(
            400,
            "bad_email",
            "email is missing or not an address",
            "give the email address the invoices should go to",
        )
    claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
    pool: db.Pool = request.app.state.pool
    checkout_id = await pool.fetchval(
        db.q("stripe_insert_checkout"),
        keys.sha256(claim),
        tier,
        email,
        entitlements.CLAIM_VALIDITY,
    )
    client = billing(request)
    try:
        customer = await client.create_customer(email, idempotency_key=f"customer-{checkout_id}")
        session_id, url = await client.create_checkout(
            checkout_id=checkout_id, price=prices[tier], tier=tier, customer=customer
        )
    except errors.BillingError as exc:
        return _billing_problem(exc)
    await pool.execute(db.q("stripe_set_checkout_session"), checkout_id, session_id, customer)
    return JSONResponse(
        {
            "checkout_url": url,
            "session_id": session_id,
            "tier": tier,
            "claim_secret": claim,
            "claim": "after paying, POST /api/v1/payments/claim {claim_secret} once to get "
            "your API key; keep the secret private, the key is shown only once",
        },
        201,
    )


@router.post(
    "/api/v1/payments/claim",
    summary="Get the subscriber key, once",
    status_code=201,
    responses=responses(400, 404, 409, 422, 503),
)
@db_guarded
async def claim(request: Request, body: ClaimRequest) -> JSONResponse:
    secret = body.claim_secret
    if not secret.startswith(entitlements.CLAIM_PREFIX):
        return problem(
            400,
            "bad_claim_secret",
            "claim_secret is missing or malformed",
            "send the claim_secret that checkout returned",
        )
    result = await entitlements.claim_key(request.app.state.pool, secret)
    if result.key is None:
        return problem(
            result.status_code,
            "claim_refused",
            result.problem or "refused",
            _CLAIM_FIX.get(result.status_code, "see docs/stripe.md"),
        )
    return JSONResponse(
        {
            "api_key": result.key,
            "tier": result.tier,
            "use": "send it as 'Authorization: Bearer <api_key>'; it is shown only this once",
        },
        201,
    )


@router.post("/api/v1/payments/keys/rotate", summary="Replace your subscriber key")
@db_guarded
async def rotate(request: Request) -> JSONResponse:
    key = entitlements.bearer_key(request.headers.get("authorization"))
    if key is None:
        return problem(
            401,
            "missing_key",
            "no subscriber key",
            "send 'Authorization: Bearer <subscriber key>' with the key to replace",
        )
    result = await entitlements.rotate_key(request.app.state.pool, key)
    if result.key is None:
        return problem(
            401,
            "unknown_key",
            result.problem or "refused",
            "only a live key can be rotated; a canceled subscription's key is revoked",
        )
    return JSONResponse(
        {
            "api_key": result.key,
            "use": "the old key stopped working; this one is shown only this once",
        },
        201,
    )


@router.post("/api/v1/payments/portal", summary="Stripe Customer Portal for the caller")
@db_guarded
async def portal(request: Request) -> JSONResponse:
    customer = await _caller_customer(request)
    if isinstance(customer, JSONResponse):
        return customer
    try:
        url = await billing(request).create_portal(customer)
    except errors.BillingError as exc:
        return _billing_problem(exc)
    return JSONResponse({"portal_url": url})


@router.get("/api/v1/payments/invoices", summary="The caller's invoices")
@db_guarded
async def invoices(request: Request, limit: int = 24) -> JSONResponse:
    if not 1 <= limit <= 100:
        return problem(400, "bad_limit", "limit is out of range", "give 1 to 100")
    customer = await _caller_customer(request)
    if isinstance(customer, JSONResponse):
        return customer
    rows = await request.app.state.pool.fetch(db.q("stripe_customer_invoices"), customer, limit)
    return JSONResponse({"invoices": [_invoice(r) for r in rows]})


@router.get(
    "/api/v1/payments/subscription",
    summary="Your subscription: tier, status, usage this period, cards",
    responses=responses(401, 503),
)
@db_guarded
async def subscription(request: Request) -> JSONResponse:
    key = entitlements.bearer_key(request.headers.get("authorization"))
    pool: db.Pool = request.app.state.pool
    row = await pool.fetchrow(db.q("stripe_key_subscription"), keys.sha256(key or ""))
    if key is None or row is None:
        return problem(
            401,
            "unknown_key",
            "no live subscriber key in Authorization",
            "send 'Authorization: Bearer <subscriber key>'",
        )
    cards = await pool.fetch(db.q("stripe_customer_cards"), row["customer_id"])
    return JSONResponse(
        {
            "key_prefix": row["key_prefix"],
            "subscription": row["subscription_id"],
            "tier": row["tier"],
            "status": row["status"],
            "cancel_at_period_end": row["cancel_at_period_end"],
            "current_period_end": _iso(row["current_period_end"]),
            "past_due_since": _iso(row["past_due_since"]),
            "payment_reversed": row["reversal"],  # refunded / disputed: access held off
            "used": row["used"],
            "monthly_quota": row["monthly_quota"],
            "remaining": max(0, (row["monthly_quota"] or 0) - row["used"]),
            "rate_per_minute": row["rate_per_minute"],
            "cards": [{"brand": c["brand"], "last4": c["last4"]} for c in cards],
        }
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@router.get("/api/v1/payments/success", summary="Where Checkout sends the buyer back")
async def success(session_id: str = "") -> JSONResponse:
    return JSONResponse(
        {
            "session_id": session_id,
            "next": "POST /api/v1/payments/claim {claim_secret} to get your API key",
        }
    )


def _invoice(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": r["id"],
        "status": r["status"],
        "paid": r["paid"],
        "currency": r["currency"],
        "amount_due": r["amount_due"],
        "amount_paid": r["amount_paid"],
        "hosted_invoice_url": r["hosted_invoice_url"],
        "invoice_pdf": r["invoice_pdf"],
        "period_start": r["period_start"].isoformat() if r["period_start"] else None,
        "period_end": r["period_end"].isoformat() if r["period_end"] else None,
        "created": r["created"].isoformat(),
    }


async def _caller_customer(request: Request) -> str | JSONResponse:
    key = entitlements.bearer_key(request.headers.get("authorization"))
    if key is None:
        return problem(
            401,
            "missing_key",
            "no subscriber key",
            "send 'Authorization: Bearer <subscriber key>'",
        )
    async with request.app.state.pool.acquire() as conn:
        customer = await entitlements.key_customer(conn, key)
    if customer is None:
        return problem(
            401,
            "unknown_key",
            "this subscriber key is unknown or revoked",
            "use the key claimed after checkout; a canceled subscription's key is revoked",
        )
    return customer
