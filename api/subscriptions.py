"""Stripe events applied to PostgreSQL: customers, subscriptions, payment methods, invoices.

One delivery is one transaction: the ``stripe_events`` row (unique Stripe event
id) and every effect of the event commit together or not at all. So

* a duplicate delivery finds its row already there and changes nothing;
* a failure while applying rolls the row back with the effects, the webhook
  answers 500 and Stripe's retry applies the event afresh (the failure itself
  is written to ``stripe_event_failures`` outside that transaction);
* an unknown event type is stored (outcome ``ignored``) and acknowledged.

Stripe delivers out of order. Each state row keeps the ``created`` time of the
event that wrote it; an older event never overwrites it, and one of the same
second never moves a subscription back along its life (see
``stripe_status_rank`` in migration 0006). Canceled is final.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from api import stripe_charges, stripe_events
from api.errors import DB_ERRORS
from api.stripe_client import StripeBilling
from watcher import db, metrics, stripe_tiers

log = structlog.get_logger(__name__)

Outcome = Literal["applied", "stale", "ignored", "duplicate", "unmatched"]
Obj = Mapping[str, Any]

TIERS = stripe_tiers.TIERS
# Statuses an invoice outcome may move a subscription from (see apply_invoice).
_RECOVERABLE = ["past_due", "unpaid", "incomplete"]
_PAYING = ["active", "trialing"]


# Moved to watcher/stripe_tiers.py (the gateway file's validation needs it in watcher/).
price_tiers = stripe_tiers.price_tiers


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


def _id(value: Any) -> str | None:
    """Stripe sends a related object either as its id or expanded."""
    if isinstance(value, Mapping):
        return str(value["id"])
    return str(value) if value else None


def _first_item(sub: Obj) -> Obj:
    items = (sub.get("items") or {}).get("data") or []
    return items[0] if items else {}


def _period(sub: Obj, key: str) -> datetime | None:
    # Newer API versions moved the current period from the subscription to its items.
    return _ts(sub.get(key) if sub.get(key) is not None else _first_item(sub).get(key))


def _invoice_subscription(inv: Obj) -> str | None:
    if inv.get("subscription"):
        return _id(inv["subscription"])
    details = (inv.get("parent") or {}).get("subscription_details") or {}
    return _id(details.get("subscription"))


async def apply_subscription(
    conn: db.Connection, event_id: str, created: datetime, sub: Obj, prices: Mapping[str, str]
) -> bool:
    """Upsert a subscription unless stored state is newer; revoke keys when it ends."""
    price = _id((_first_item(sub).get("price") or {}).get("id"))
    status = str(sub["status"])
    row = await conn.fetchrow(
        db.q("stripe_upsert_subscription"),
        sub["id"],
        _id(sub["customer"]),
        price,
        prices.get(price or ""),
        status,
        _period(sub, "current_period_start"),
        _period(sub, "current_period_end"),
        bool(sub.get("cancel_at_period_end")),
        _ts(sub.get("canceled_at") or sub.get("ended_at")),
        created,
        event_id,
    )
    if row is None:
        return False
    if price and price not in prices:
        log.warning("stripe_unknown_price", subscription=sub["id"], price=price)
    if row["status"] in ("canceled", "incomplete_expired"):
        await conn.fetch(
            db.q("stripe_revoke_subscription_keys"), sub["id"], f"subscription {row['status']}"
        )
    return True


async def apply_invoice(
    conn: db.Connection, event_type: str, event_id: str, created: datetime, inv: Obj
) -> bool:
    """Store the invoice's payment status; a payment outcome moves its subscription."""
    subscription = _invoice_subscription(inv)
    written = await conn.fetchrow(
        db.q("stripe_upsert_invoice"),
        inv["id"],
        _id(inv["customer"]),
        subscription,
        str(inv.get("status") or "open"),
        bool(inv.get("paid") or inv.get("status") == "paid"),
        int(inv.get("attempt_count") or 0),
        str(inv.get("currency") or "usd"),
        int(inv.get("amount_due") or 0),
        int(inv.get("amount_paid") or 0),
        inv.get("hosted_invoice_url"),
        inv.get("invoice_pdf"),
        _ts(inv.get("period_start")),
        _ts(inv.get("period_end")),
        _ts(inv.get("created")) or created,
        created,
    )
    moved = None
    if subscription and event_type == "invoice.payment_failed":
        moved = await conn.fetchrow(
            db.q("stripe_invoice_moves_subscription"),
            subscription,
            "past_due",
            created,
            event_id,
            _PAYING,
        )
    elif subscription and event_type == "invoice.payment_succeeded":
        moved = await conn.fetchrow(
            db.q("stripe_invoice_moves_subscription"),
            subscription,
            "active",
            created,
            event_id,
            _RECOVERABLE,
        )
    return written is not None or moved is not None


async def apply_payment_method(conn: db.Connection, created: datetime, pm: Obj) -> bool:
    """Keep the id, type, brand and last 4 digits; never anything else of a card."""
    card = pm.get("card") or {}
    last4 = card.get("last4")
    row = await conn.fetchrow(
        db.q("stripe_upsert_payment_method"),
        pm["id"],
        _id(pm.get("customer")),
        str(pm.get("type") or "card"),
        card.get("brand"),
        last4 if isinstance(last4, str) and len(last4) == 4 and last4.isdigit() else None,
        created,
    )
    return row is not None


async def apply_checkout(conn: db.Connection, session: Obj) -> bool:
    """Bind our checkout row (and so its key claim) to the customer and subscription."""
    customer = _id(session.get("customer"))
    if customer:
        email = (session.get("customer_details") or {}).get("email")
        await conn.execute(db.q("stripe_upsert_customer"), customer, email)
    try:
        ours = uuid.UUID(str(session.get("client_reference_id")))
    except ValueError:
        ours = None  # a session we did not start (payment link, dashboard)
    row = await conn.fetchrow(
        db.q("stripe_complete_checkout"),
        ours,
        session["id"],
        customer,
        _id(session.get("subscription")),
    )
    return row is not None or customer is not None  # the customer is recorded either way


Applier = Callable[
    [db.Connection, str, str, datetime, Obj, Mapping[str, str]], Awaitable[stripe_charges.Applied]
]


async def _sub(
    conn: db.Connection, _t: str, eid: str, created: datetime, obj: Obj, prices: Mapping[str, str]
) -> bool:
    await conn.execute(db.q("stripe_upsert_customer"), _id(obj["customer"]), None)
    changed = await apply_subscription(conn, eid, created, obj, prices)
    await stripe_charges.link(conn)  # a reversal waiting for its subscription's period
    return changed


async def _inv(
    conn: db.Connection, etype: str, eid: str, created: datetime, obj: Obj, _p: Mapping[str, str]
) -> bool:
    await conn.execute(db.q("stripe_upsert_customer"), _id(obj["customer"]), None)
    changed = await apply_invoice(conn, etype, eid, created, obj)
    await stripe_charges.record_invoice_payments(conn, str(obj["id"]), obj)
    await stripe_charges.link(conn)  # a refund or dispute that arrived before its invoice
    return changed


async def _pm(
    conn: db.Connection, _t: str, _e: str, created: datetime, obj: Obj, _p: Mapping[str, str]
) -> bool:
    return await apply_payment_method(conn, created, obj)


async def _checkout(
    conn: db.Connection, _t: str, _e: str, _c: datetime, obj: Obj, _p: Mapping[str, str]
) -> bool:
    return await apply_checkout(conn, obj)


async def _charge(
    conn: db.Connection, _t: str, _e: str, _c: datetime, obj: Obj, _p: Mapping[str, str]
) -> stripe_charges.Applied:
    return await stripe_charges.apply_charge(conn, obj)


async def _dispute(
    conn: db.Connection, etype: str, _e: str, created: datetime, obj: Obj, _p: Mapping[str, str]
) -> stripe_charges.Applied:
    return await stripe_charges.apply_dispute(conn, etype, created, obj)


async def _invoice_payment(
    conn: db.Connection, _t: str, _e: str, _c: datetime, obj: Obj, _p: Mapping[str, str]
) -> stripe_charges.Applied:
    return await stripe_charges.apply_invoice_payment(conn, obj)


HANDLERS: dict[str, Applier] = {
    "checkout.session.completed": _checkout,
    "customer.subscription.created": _sub,
    "customer.subscription.updated": _sub,
    "customer.subscription.deleted": _sub,
    "invoice.payment_succeeded": _inv,
    "invoice.payment_failed": _inv,
    "payment_method.attached": _pm,
    "payment_method.detached": _pm,
    "invoice_payment.paid": _invoice_payment,
    **{etype: _charge for etype in stripe_charges.CHARGE_EVENTS},
    **{etype: _dispute for etype in stripe_charges.DISPUTE_EVENTS},
}


# Why applying an event can fail: the database, or a signed event of an unexpected shape.
APPLY_ERRORS: tuple[type[BaseException], ...] = (
    *DB_ERRORS,
    AttributeError,
    KeyError,
    TypeError,
    ValueError,
)


def _touches(etype: str, obj: Obj) -> tuple[list[str], list[str]]:
    """The subscriptions and charges an event names (whose changes become our events)."""
    subs = [obj["id"]] if etype.startswith("customer.subscription.") else []
    if etype.startswith("invoice.payment_"):
        subs = [s for s in [_invoice_subscription(obj)] if s]
    charges = [obj["id"]] if etype in stripe_charges.CHARGE_EVENTS else []
    if etype in stripe_charges.DISPUTE_EVENTS:
        charges = [c for c in [_id(obj.get("charge"))] if c]
    return [str(s) for s in subs], [str(c) for c in charges]


def stored_payload(event: Obj) -> dict[str, Any]:
    """The event as we keep it: a payment method reduced to id, type, customer, brand, last4."""
    kept = dict(event)
    obj = event["data"]["object"]
    if obj.get("object") == "payment_method" or str(event["type"]).startswith("payment_method."):
        card = obj.get("card") or {}
        slim = {k: obj.get(k) for k in ("id", "object", "type", "customer")}
        slim["card"] = {"brand": card.get("brand"), "last4": card.get("last4")}
        kept["data"] = {"object": slim}
    return kept


async def process_event(pool: db.Pool, event: Obj, prices: Mapping[str, str]) -> Outcome:
    """Apply one verified event exactly once; raises (after recording why) when applying fails."""
    etype = str(event["type"])
    obj: Obj = event["data"]["object"]
    created = _ts(event["created"]) or datetime.now(UTC)
    handler = HANDLERS.get(etype)
    try:
        async with pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                db.q("stripe_insert_event"),
                event["id"],
                etype,
                created,
                bool(event.get("livemode")),
                obj.get("id"),
                "ignored" if handler is None else "applied",
                json.dumps(stored_payload(event)),
            )
            if fresh is None:
                outcome: Outcome = "duplicate"
            elif handler is None:
                outcome = "ignored"
            else:
                was = await stripe_events.before(conn, *_touches(etype, obj))
                changed = await handler(conn, etype, str(event["id"]), created, obj, prices)
                await stripe_events.write(conn, was)  # our subscription.* events
                outcome = (
                    "unmatched" if changed == "unmatched" else "applied" if changed else "stale"
                )
                if outcome != "applied":
                    await conn.execute(db.q("stripe_set_event_outcome"), event["id"], outcome)
    except APPLY_ERRORS as exc:
        metrics.STRIPE_WEBHOOKS.labels("failed").inc()
        await _record_failure(pool, event, exc)
        raise
    metrics.STRIPE_WEBHOOKS.labels(outcome).inc()
    log.info("stripe_event", event_id=event["id"], type=etype, outcome=outcome)
    return outcome


async def _record_failure(pool: db.Pool, event: Obj, exc: BaseException) -> None:
    log.error("stripe_event_failed", event_id=event.get("id"), error=repr(exc))
    try:
        await pool.execute(
            db.q("stripe_record_failure"), str(event.get("id")), str(event.get("type")), repr(exc)
        )
    except DB_ERRORS as rec_exc:
        # The database is why we failed; the log line above is all we can keep.
        log.error("stripe_failure_not_recorded", error=repr(rec_exc))


async def reconcile(
    pool: db.Pool,
    billing: StripeBilling,
    prices: Mapping[str, str],
    *,
    since: datetime,
    max_pages: int = 50,
) -> dict[str, int]:
    """Fetch Stripe's events since ``since`` and apply the handled ones, oldest first.

    For deliveries Stripe gave up on (or an endpoint that was down for days):
    each event goes through :func:`process_event`, so one already applied is a
    duplicate and nothing is applied twice. Returns counts by outcome.
    """
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(max_pages):  # bounded: 100 events a page
        page, more = await billing.list_events(
            created_gte=int(since.timestamp()), starting_after=cursor
        )
        found.extend(e for e in page if e.get("type") in HANDLERS)
        if not more or not page:
            break
        cursor = str(page[-1]["id"])
    counts: dict[str, int] = {}
    for event in sorted(found, key=lambda e: (int(e["created"]), str(e["id"]))):
        outcome = await process_event(pool, event, prices)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
