"""Our subscription events (``subscription.*``, watcher/events.py) from applied Stripe events.

:func:`api.subscriptions.process_event` applies one Stripe event in one transaction.
This module, in that transaction, takes the state of what the event may change before
it is applied (:func:`before`, under a lock that applies Stripe events one at a time)
and writes an event for each difference after (:func:`write`). So a replayed delivery,
or one Stripe sent out of order that the stored state refuses, changes nothing and
writes nothing, and a rolled-back application writes nothing either.

    subscription.activated      status becomes active or trialing (from none, incomplete,
                                past_due, unpaid or paused)
    subscription.tier_changed   a known subscription's tier is another one
    subscription.past_due       status becomes past_due or unpaid
    subscription.cancelled      status becomes canceled or incomplete_expired (final)
    subscription.refunded       a charge of the subscription is fully refunded, as
    subscription.disputed       stripe_charges holds it: reversed (or disputed), and tied
                                to its subscription (whichever came last)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from watcher import db, events

SERVING = ("active", "trialing")
OVERDUE = ("past_due", "unpaid")
ENDED = ("canceled", "incomplete_expired")
_STATUS_EVENTS = (
    (SERVING, "subscription.activated"),
    (OVERDUE, "subscription.past_due"),
    (ENDED, "subscription.cancelled"),
)
# stripe_charges.revoked_reason -> the event a charge's reversal writes.
_REVERSAL_EVENTS = {"refunded": "subscription.refunded", "disputed": "subscription.disputed"}


@dataclass(frozen=True, slots=True)
class Before:
    """What the event may change, as it was before it was applied."""

    subscriptions: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    sub_ids: tuple[str, ...] = ()
    charges: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    charge_ids: tuple[str, ...] = ()


async def before(
    conn: db.Connection, subscription_ids: Sequence[str], charge_ids: Sequence[str]
) -> Before:
    """Lock (one Stripe event at a time) and read the state the event may change: the
    subscriptions and charges it names, and reversed charges still waiting for their
    subscription. Runs in the transaction that applies the event."""
    await conn.execute(db.q("stripe_events_lock"))
    subs = await conn.fetch(db.q("stripe_subscription_states"), list(subscription_ids))
    charges = await conn.fetch(db.q("stripe_charge_states"), list(charge_ids), True)
    return Before(
        {r["id"]: (r["status"], r["tier"]) for r in subs},
        tuple(subscription_ids),
        {r["id"]: (r["subscription_id"], r["revoked_reason"]) for r in charges},
        tuple(dict.fromkeys([*charge_ids, *(r["id"] for r in charges)])),
    )


async def write(conn: db.Connection, was: Before) -> int:
    """Write one event per change since :func:`before`; returns how many."""
    n = 0
    subs = await conn.fetch(db.q("stripe_subscription_states"), list(was.sub_ids))
    for r in subs:
        for type_ in changes(was.subscriptions.get(r["id"]), (r["status"], r["tier"])):
            n += await events.subscriptions(conn, type_, [r["id"]])
    charges = await conn.fetch(db.q("stripe_charge_states"), list(was.charge_ids), False)
    for r in charges:
        now = (r["subscription_id"], r["revoked_reason"])
        if now[0] is None or now[1] is None or was.charges.get(r["id"]) == now:
            continue
        n += await events.subscription_charges(conn, _REVERSAL_EVENTS[now[1]], [r["id"]])
    return n


def changes(old: tuple[str, str | None] | None, new: tuple[str, str | None]) -> list[str]:
    """The event types from a subscription's (status, tier) ``old`` (None: unknown) to ``new``."""
    out = []
    if old is not None and old[1] != new[1]:
        out.append("subscription.tier_changed")
    for statuses, type_ in _STATUS_EVENTS:
        if new[0] in statuses and (old is None or old[0] not in statuses):
            out.append(type_)
    return out
