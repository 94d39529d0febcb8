"""Stripe's catch-up: apply the events the webhook missed (``watcher stripe-sync``, and the
daemon's scheduled ``stripe_sync`` job, watcher/jobs.py)."""

from __future__ import annotations

from datetime import datetime

from api import stripe_client, subscriptions
from watcher import db
from watcher.settings import Settings


async def run(settings: Settings, pool: db.Pool, since: datetime) -> dict[str, int]:
    """Apply Stripe's handled events created since ``since``, oldest first, each through
    the webhook's exactly-once path (one already applied counts as ``duplicate``).
    Returns counts by outcome."""
    billing = stripe_client.StripeBilling(settings)
    try:
        return await subscriptions.reconcile(
            pool, billing, subscriptions.price_tiers(settings), since=since
        )
    finally:
        await billing.aclose()
