"""Refund candidates: payments an operator may want to give back, each with why.

Rejected holds; over-payments above ``X402_REFUND_MIN_USD`` (an EVM invoice's own
1-9,999 base units above whole calls are its amount, not an over-payment); a second
payment for an invoice already paid; a payment for an invoice that expired, credited
and not claimed within the claim window (``X402_MAX_PAYMENT_AGE_DAYS`` when set, else 7
days). Each row names the kind of refund that fits and the amount it would send.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from watcher import db, money
from watcher.refunds import model
from watcher.settings import Settings

DEFAULT_CLAIM_WINDOW_DAYS = 7


def claim_window(settings: Settings) -> timedelta:
    """How long a credited payment may wait for its claim (the screening's age rule); with
    the rule off (0) a payment may be claimed at any time, and an unclaimed one is listed
    after the default window."""
    return timedelta(days=settings.x402_max_payment_age_days or DEFAULT_CLAIM_WINDOW_DAYS)


async def listing(pool: db.Pool, settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """The candidates, oldest payment first, at most ``limit``."""
    rows = await pool.fetch(
        db.q("refund_candidates"),
        money.usd_to_units(settings.x402_refund_min_usd),
        settings.price_per_call_units,
        claim_window(settings),
        limit,
        list(model.REFUNDABLE_STATES),
    )
    return [dict(r) for r in rows]
