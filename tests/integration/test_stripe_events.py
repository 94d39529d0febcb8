"""subscription.* events from signed Stripe deliveries: one per change of the stored state,
in the transaction that applies the delivery; replays and stale events write nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx

from devkit import stripe_helpers as sh
from tests.integration.test_stripe_reversals import (
    CHARGE,
    CUS,
    SUB,
    charge,
    dispute,
    http,
    paid_invoice,
    send,
    subscriber,
)
from watcher import db

__all__ = ["http"]  # the fixture, imported


async def sub_events(pool: db.Pool) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT type, resource_id, data FROM events WHERE resource = 'subscription' ORDER BY id"
    )
    assert all(r["resource_id"] == json.loads(r["data"])["id"] for r in rows)
    return [(r["type"], json.loads(r["data"])) for r in rows]


async def types(pool: db.Pool) -> list[str]:
    return [t for t, _ in await sub_events(pool)]


async def test_a_life_writes_each_change_once(http: httpx.AsyncClient, pool: db.Pool) -> None:
    sub = sh.subscription
    await send(http, "customer.subscription.created", sub(SUB, CUS, "incomplete"), 0)
    assert await types(pool) == []  # not serving yet
    active = sh.event("customer.subscription.updated", sub(SUB, CUS, "active"), sh.T0 + 10)
    assert (await sh.deliver(http, active)).json()["outcome"] == "applied"
    assert (await sh.deliver(http, active)).json()["outcome"] == "duplicate"
    # Out of order: an older state, and the same state again, change nothing.
    assert await send(http, "customer.subscription.updated", sub(SUB, CUS, "incomplete"), 5) == (
        "stale"
    )
    await send(http, "customer.subscription.updated", sub(SUB, CUS, "active"), 11)
    assert await types(pool) == ["subscription.activated"]
    await send(http, "customer.subscription.updated", sub(SUB, CUS, "active", tier="team"), 20)
    failed = sh.invoice("in_test_ev1", CUS, SUB, "open", paid=False)
    await send(http, "invoice.payment_failed", failed, 30)
    await send(http, "invoice.payment_failed", failed, 31)  # still past due: nothing
    await send(
        http,
        "invoice.payment_succeeded",
        sh.invoice("in_test_ev1", CUS, SUB, "paid", paid=True),
        40,
    )
    await send(http, "customer.subscription.deleted", sub(SUB, CUS, "canceled", tier="team"), 50)
    assert await send(http, "customer.subscription.updated", sub(SUB, CUS, "active"), 60) == (
        "stale"  # canceled is final
    )
    got = await sub_events(pool)
    assert [t for t, _ in got] == [
        "subscription.activated",
        "subscription.tier_changed",
        "subscription.past_due",
        "subscription.activated",  # paid after all: serving again
        "subscription.cancelled",
    ]
    assert [d["status"] for _, d in got] == ["active", "active", "past_due", "active", "canceled"]
    last = got[-1][1]
    assert (last["tier"], last["customer"], last["object"]) == ("team", CUS, "subscription")
    assert last["current_period_end"].startswith("20") and last["cancel_at_period_end"] is False
    assert got[1][1]["tier"] == "team" and got[0][1]["tier"] == "pro"


async def test_a_failed_application_writes_no_event(http: httpx.AsyncClient, pool: db.Pool) -> None:
    await pool.execute(
        "CREATE FUNCTION fail_sub() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'injected fault'; END $$;"
        " CREATE TRIGGER fault AFTER INSERT ON stripe_subscriptions"
        " FOR EACH ROW EXECUTE FUNCTION fail_sub();"
    )
    payload = sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0)
    assert (await sh.deliver(http, payload)).status_code == 500
    assert await pool.fetchval("SELECT count(*) FROM events") == 0
    await pool.execute("DROP TRIGGER fault ON stripe_subscriptions")
    assert (await sh.deliver(http, payload)).json()["outcome"] == "applied"  # Stripe's retry
    assert await types(pool) == ["subscription.activated"]


async def test_a_full_refund_writes_refunded_once_with_the_charge(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    await subscriber(http, pool)
    await send(http, "charge.refunded", charge(refunded=1000), 5)  # partial: nothing changes
    assert await types(pool) == ["subscription.activated"]
    await send(http, "charge.refunded", charge(refunded=8900), 10)
    await send(http, "charge.refunded", charge(refunded=8900), 11)  # Stripe says it again
    got = await sub_events(pool)
    assert [t for t, _ in got] == ["subscription.activated", "subscription.refunded"]
    data = got[1][1]
    assert data["id"] == SUB and data["charge"]["id"] == CHARGE
    assert data["charge"]["amount"] == 8900 and data["charge"]["amount_refunded"] == 8900
    assert data["charge"]["reversal"] == "refunded"


async def test_a_dispute_before_its_invoice_writes_disputed_when_tied(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    await subscriber(http, pool, invoice=False)
    assert await send(http, "charge.dispute.created", dispute("needs_response"), 10) == "unmatched"
    assert await types(pool) == ["subscription.activated"]  # not tied to it yet
    await send(http, "invoice.payment_succeeded", paid_invoice(), 1)  # delivered late: tied
    await send(http, "charge.dispute.updated", dispute("under_review"), 20)  # still disputed
    got = await sub_events(pool)
    assert [t for t, _ in got] == ["subscription.activated", "subscription.disputed"]
    assert got[1][1]["charge"]["id"] == CHARGE and got[1][1]["charge"]["reversal"] == "disputed"
    # Won: access is back, and no event type says so (docs/webhooks.md).
    await send(http, "charge.dispute.closed", dispute("won"), 30)
    assert len(await sub_events(pool)) == 2
