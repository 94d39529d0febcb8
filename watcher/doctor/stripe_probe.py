"""Stripe rows of the doctor: the API answers our key and the three prices are what we sell.

Through the ``stripe`` library (async, httpx), no retries, bounded by the
doctor's seconds. ``api_base`` points it at a local fake in tests.
"""

from __future__ import annotations

from typing import Any

import stripe

from watcher.doctor.config import STRIPE_PRICES_CENTS, stripe_mode
from watcher.doctor.report import Check, secret
from watcher.settings import Settings


def prices_to_check(settings: Settings) -> dict[str, str]:
    """tier -> price id, for the ids that look like price ids (others already failed)."""
    out = {}
    for tier in STRIPE_PRICES_CENTS:
        value = getattr(settings, f"stripe_price_id_{tier}")
        if isinstance(value, str) and value.startswith("price_") and "YOUR_" not in value:
            out[tier] = value
    return out


def should_probe(settings: Settings) -> bool:
    key = secret(settings.stripe_secret_key)
    return key is not None and stripe_mode(key) is not None and "YOUR_" not in key


async def stripe_rows(settings: Settings, seconds: float, api_base: str | None) -> list[Check]:
    """``Stripe API`` reachable and accepting the key, then one row per price id."""
    key = secret(settings.stripe_secret_key) or ""
    # Any: close_async() has no annotations in the stripe package and mypy is strict.
    http: Any = stripe.HTTPXClient(timeout=seconds)
    client = stripe.StripeClient(
        key,
        base_addresses={"api": api_base} if api_base else {},
        http_client=http,
        max_network_retries=0,
    )
    rows: list[Check] = []
    try:
        for tier, price_id in prices_to_check(settings).items():
            try:
                price = await client.v1.prices.retrieve_async(price_id)
            except stripe.InvalidRequestError as exc:
                rows.append(_missing(tier, price_id, exc))
                continue
            except stripe.AuthenticationError:
                fix = "the key was revoked or mistyped: paste it again from Dashboard → API keys"
                return [Check("stripe", "Stripe API", "fail", "key rejected", fix)]
            except stripe.StripeError as exc:
                msg = str(exc.user_message or type(exc).__name__)
                fix = "check outbound HTTPS to api.stripe.com"
                return [Check("stripe", "Stripe API", "fail", f"unreachable: {msg}", fix)]
            rows.append(_price_row(tier, price_id, price.to_dict(), stripe_mode(key)))
    finally:
        await http.close_async()
    mode = stripe_mode(key)
    return [Check("stripe", "Stripe API", "ok", f"reachable, {mode} mode key accepted"), *rows]


def _missing(tier: str, price_id: str, exc: stripe.InvalidRequestError) -> Check:
    fix = (
        f"no such price in this account and mode: create the ${STRIPE_PRICES_CENTS[tier] // 100}"
        f"/month price and set STRIPE_PRICE_ID_{tier.upper()}"
    )
    return Check("stripe", f"STRIPE_PRICE_ID_{tier.upper()}", "fail", f"{price_id}: not found", fix)


def _price_row(tier: str, price_id: str, price: dict[str, Any], key_mode: str | None) -> Check:
    name = f"STRIPE_PRICE_ID_{tier.upper()}"
    want = STRIPE_PRICES_CENTS[tier]
    recurring = price.get("recurring") or {}
    found = (
        f"{price_id}: {price.get('unit_amount')} {price.get('currency')} cents "
        f"every {recurring.get('interval_count', 1)} {recurring.get('interval')}"
    )
    wrong = []
    if price.get("unit_amount") != want or price.get("currency") != "usd":
        wrong.append(f"amount should be {want} usd cents (${want // 100})")
    if recurring.get("interval") != "month" or recurring.get("interval_count", 1) != 1:
        wrong.append("should recur monthly")
    if not price.get("active", False):
        wrong.append("is archived: reactivate it or create a new one")
    if key_mode is not None and bool(price.get("livemode")) != (key_mode == "live"):
        wrong.append("belongs to the other mode than the key")
    if wrong:
        return Check("stripe", name, "fail", found, "; ".join(wrong))
    return Check("stripe", name, "ok", f"{price_id}: ${want // 100}/month usd")
