"""Stripe subscription tiers: their names and which of them this configuration sells.

Here rather than in api/ because the gateway file's validation (watcher/) needs the
tiers on sale, and watcher/ never imports api/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.settings import Settings

TIERS = ("pro", "team", "enterprise")


def price_tiers(settings: Settings) -> dict[str, str]:
    """``{price id: tier}`` from ``STRIPE_PRICE_ID_PRO|TEAM|ENTERPRISE`` (placeholders skipped)."""
    from watcher.settings import is_placeholder

    out: dict[str, str] = {}
    for tier in TIERS:
        price = getattr(settings, f"stripe_price_id_{tier}")
        if price and not is_placeholder(price):
            out[price] = tier
    return out


def sold(settings: Settings) -> frozenset[str]:
    """The tier names a subscriber can buy with this configuration."""
    return frozenset(price_tiers(settings).values())
