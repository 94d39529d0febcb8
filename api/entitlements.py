"""Subscriber API keys: claimed once after checkout, metered atomically, explained when refused.

The flow (docs/stripe.md):

1. ``POST /api/v1/payments/checkout`` creates a checkout row holding the hash
   of a fresh *claim secret* and answers the Stripe Checkout URL together with
   the secret. Only the buyer's browser or client ever sees it.
2. Stripe's webhook binds the checkout to its customer and subscription.
3. ``POST /api/v1/payments/claim {claim_secret}`` mints the subscriber key once
   the subscription is active, stores its SHA-256 and answers the key: the
   only time it is shown. A second claim is refused.

A call is metered by one UPDATE (``stripe_consume_subscriber_key``) that checks
the key, the subscription's status (or the past-due grace period), the tier's
monthly quota and per-minute rate, and writes the usage row in the same
statement: concurrent calls never overdraw.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from api import chains, subscriptions
from watcher import db, keys, money
from watcher.settings import Settings

KEY_PREFIX = "wsk_"  # watcher subscriber key: tells it apart from Stripe's sk_ keys in logs
CLAIM_PREFIX = "wcl_"
CLAIM_VALIDITY = timedelta(days=7)
DEFAULT_GRACE = timedelta(hours=72)

Refusal = Literal[
    "unknown_key",
    "revoked",
    "inactive",
    "past_due",
    "quota_exhausted",
    "rate_limited",
    "no_tier",
    "tier_not_allowed",
    "refunded",
    "disputed",
]
_REVERSED = {
    "refunded": "the payment for this billing period was refunded, so its access ended; "
    "a paid renewal (a new billing period) restores it",
    "disputed": "the payment for this billing period is disputed (a chargeback), so its "
    "access is stopped; it resumes if the dispute is decided in the merchant's favour",
}


def bearer_key(authorization: str | None) -> str | None:
    """The subscriber key of an ``Authorization: Bearer <key>`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX) or len(token) > 128:
        return None
    return token


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The outcome of metering one call against a subscriber key."""

    ok: bool
    reason: Refusal | None = None
    detail: str = ""
    tier: str | None = None
    remaining: int | None = None
    status_code: int = 200
    period_end: datetime | None = None
    key_id: int | None = None
    usage_id: int | None = None  # 402 when payment would help, 429 when waiting would


async def consume_subscriber_key(
    conn: db.Connection,
    raw_key: str,
    cost: int,
    endpoint: str,
    *,
    grace: timedelta = DEFAULT_GRACE,
    tiers: frozenset[str] | None = None,
) -> KeyCheck:
    """Meter ``cost`` calls against a subscriber key in one statement; refuse with the reason.
    ``tiers``: the subscription tiers the route allows (None: any)."""
    if cost <= 0:
        raise ValueError("cost must be positive")
    key_hash = keys.sha256(raw_key)
    allowed = None if tiers is None else sorted(tiers)
    row = await conn.fetchrow(
        db.q("stripe_consume_subscriber_key"), key_hash, cost, grace, endpoint, allowed
    )
    if row is not None:
        return KeyCheck(
            ok=True,
            tier=row["tier"],
            remaining=row["remaining"],
            period_end=row["period_end"],
            key_id=row["id"],
            usage_id=row["usage_id"],
        )
    why = await conn.fetchrow(db.q("stripe_explain_subscriber_key"), key_hash, grace)
    return _refusal(why, cost, tiers)


def _refusal(why: asyncpg.Record | None, cost: int, tiers: frozenset[str] | None) -> KeyCheck:
    if why is None:
        return KeyCheck(False, "unknown_key", "this subscriber key is not known", status_code=401)
    if why["revoked_reason"]:
        return KeyCheck(False, "revoked", f"key revoked: {why['revoked_reason']}", status_code=402)
    if tiers is not None and why["tier"] not in tiers:
        return KeyCheck(
            False,
            "tier_not_allowed",
            f"this route is for the {', '.join(sorted(tiers))} tier(s); this key's "
            f"subscription is {why['tier'] or 'no tier'}; upgrade in the billing portal",
            why["tier"],
            status_code=402,
        )
    status, tier = why["status"], why["tier"]
    if why["reversal"] in _REVERSED:
        reason: Refusal = why["reversal"]
        return KeyCheck(False, reason, _REVERSED[reason], tier, status_code=402)
    if tier is None:
        return KeyCheck(
            False, "no_tier", "the subscription's price is not a tier we sell", status_code=402
        )
    if status == "past_due" and not why["in_grace"]:
        return KeyCheck(
            False,
            "past_due",
            "payment failed and the grace period is over; update the card in the billing portal",
            tier,
            status_code=402,
        )
    if status not in ("active", "trialing", "past_due"):
        return KeyCheck(False, "inactive", f"subscription is {status}", tier, status_code=402)
    if why["used"] + cost > why["monthly_quota"]:
        return KeyCheck(
            False,
            "quota_exhausted",
            f"monthly quota of {why['monthly_quota']} calls used; it renews at "
            f"{why['current_period_end']:%Y-%m-%d %H:%M} UTC, or upgrade in the billing portal",
            tier,
            remaining=0,
            status_code=402,
        )
    return KeyCheck(
        False,
        "rate_limited",
        f"rate limit of {why['rate_per_minute']} calls a minute reached; retry next minute",
        tier,
        status_code=429,
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to a key claim: the raw key once, or why not."""

    key: str | None
    problem: str | None = None
    status_code: int = 200
    tier: str | None = None


async def claim_key(pool: db.Pool, claim_secret: str) -> Claim:
    """Mint the subscriber key of a completed checkout, once; the raw key is never stored."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(db.q("stripe_lock_checkout_claim"), keys.sha256(claim_secret))
        if row is None:
            return Claim(None, "unknown claim secret; use the one checkout returned", 404)
        if row["claimed_at"] is not None:
            return Claim(None, "this key was already claimed; it is shown only once", 409)
        if row["expired"]:
            return Claim(None, "this claim expired; start a new checkout", 410)
        if row["status"] not in ("active", "trialing"):
            state = row["status"] or "not completed yet"
            return Claim(None, f"subscription is {state}; retry once payment completes", 409)
        raw = new_secret(KEY_PREFIX)
        await conn.fetchval(
            db.q("stripe_insert_subscriber_key"),
            keys.sha256(raw),
            raw[: len(KEY_PREFIX) + 6],
            row["subscription_id"],
            row["customer_id"],
            row["id"],
            row["current_period_start"],
        )
        await conn.execute(db.q("stripe_mark_checkout_claimed"), row["id"])
    return Claim(raw, tier=row["tier"])


async def rotate_key(pool: db.Pool, raw_key: str) -> Claim:
    """Replace a live key by a new one (shown once); usage so far carries over."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(db.q("stripe_lock_key"), keys.sha256(raw_key))
        if row is None:
            return Claim(None, "this subscriber key is unknown or revoked", 401)
        raw = new_secret(KEY_PREFIX)
        await conn.fetchval(
            db.q("stripe_insert_rotated_key"),
            row["id"],
            keys.sha256(raw),
            raw[: len(KEY_PREFIX) + 6],
        )
        await conn.execute(db.q("stripe_revoke_key"), row["id"], "rotated")
    return Claim(raw)


async def key_customer(conn: db.Connection, raw_key: str) -> str | None:
    """The Stripe customer of a live subscriber key (for the portal and invoice pages)."""
    value = await conn.fetchval(db.q("stripe_key_customer"), keys.sha256(raw_key))
    return str(value) if value is not None else None


def _cents(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


async def how_to_pay(conn: db.Connection, settings: Settings) -> dict[str, Any]:
    """The "how to pay" part of a 402: per call with x402, or a Stripe subscription."""
    return ways_to_pay(settings, list(await conn.fetch(db.q("stripe_tiers"))))


def ways_to_pay(settings: Settings, tiers: list[asyncpg.Record] | None) -> dict[str, Any]:
    """Both ways to pay; ``tiers`` rows give the numbers (None: the database is unreachable).
    USDC only on the networks that take payments here, and not at all when none does."""
    payable = [c.name for c in chains.all_chains(settings) if c.enabled]
    ways: list[dict[str, Any]] = []
    if payable:
        ways.append(
            {
                "method": "x402",
                "header": "x-payment-token",
                "price_per_call_usd": money.usd(settings.price_per_call_units),
                "how": f"pay USDC on {', '.join(payable)} (see accepts), claim a token, "
                "send it in the x-payment-token header",
            }
        )
    sold = set(subscriptions.price_tiers(settings).values())
    if sold and settings.stripe_secret_key is not None:
        ways.append(
            {
                "method": "subscription",
                "header": "Authorization: Bearer <subscriber key>",
                "checkout": "POST /api/v1/payments/checkout {tier, email}",
                "how": "subscribe by card, claim your key once with POST "
                "/api/v1/payments/claim, send it as a Bearer token",
                "tiers": [
                    {
                        "tier": r["tier"],
                        "price_usd_per_month": _cents(r["price_usd_cents"]),
                        "monthly_quota": r["monthly_quota"],
                        "rate_per_minute": r["rate_per_minute"],
                    }
                    for r in tiers or []
                    if r["tier"] in sold
                ],
            }
        )
    return {"ways_to_pay": ways}
