"""Refunds and chargebacks end a subscription's access, as a subscriber sees it over HTTP.

Every event is a signed delivery to the real webhook; every check is a call
to a paid route with the subscriber key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from api import entitlements
from devkit import api_support
from devkit import stripe_helpers as sh
from watcher import db, keys

CUS, SUB = "cus_TestReversal1", "sub_TestReversal1"
INV, CHARGE, INTENT = "in_test_rev1", "ch_test_rev1", "pi_test_rev1"
PAID = "/x402/example/paid"
MONTH = 30 * 86400


@pytest.fixture
async def http(pool: db.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = sh.settings(
        x402_base_payment_address=api_support.BASE_RECEIVER, stripe_past_due_grace_hours=72
    )
    async with (
        sh.api_server(settings, pool) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


async def send(http: httpx.AsyncClient, etype: str, obj: dict[str, Any], at: int) -> str:
    r = await sh.deliver(http, sh.event(etype, obj, sh.T0 + at))
    assert r.status_code == 200, r.text
    outcome: str = r.json()["outcome"]
    return outcome


async def call(http: httpx.AsyncClient, key: str) -> tuple[int, str | None]:
    r = await http.get(PAID, headers={"Authorization": f"Bearer {key}"})
    return r.status_code, (r.json().get("error") if r.status_code != 200 else None)


def paid_invoice(inv_id: str = INV, *, charge: str | None = CHARGE, at: int = 0) -> dict[str, Any]:
    inv = sh.invoice(inv_id, CUS, SUB, "paid", paid=True)
    inv["created"] = inv["period_start"] = sh.T0 + at
    inv["period_end"] = sh.T0 + at + MONTH
    if charge is not None:
        inv["charge"] = charge  # API versions before 2025-03-31 name the charge here
    return inv


def charge(*, refunded: int, invoice: str | None = INV) -> dict[str, Any]:
    return {
        "id": CHARGE,
        "object": "charge",
        "amount": 8900,
        "amount_refunded": refunded,
        "refunded": refunded >= 8900,
        "invoice": invoice,
        "payment_intent": INTENT,
    }


def dispute(status: str, dispute_id: str = "dp_test_rev1") -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "charge": CHARGE,
        "payment_intent": INTENT,
        "amount": 8900,
        "status": status,
    }


async def subscriber(http: httpx.AsyncClient, pool: db.Pool, *, invoice: bool = True) -> str:
    """An active pro subscription with its key claimed (and its first invoice paid)."""
    claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
    cid = await pool.fetchval(
        db.q("stripe_insert_checkout"),
        keys.sha256(claim),
        "pro",
        "sub@example.com",
        timedelta(days=7),
    )
    session = {
        "id": "cs_test_rev",
        "object": "checkout.session",
        "customer": CUS,
        "subscription": SUB,
        "client_reference_id": str(cid),
    }
    await send(http, "checkout.session.completed", session, 0)
    await send(http, "customer.subscription.created", sh.subscription(SUB, CUS, "active"), 0)
    if invoice:
        await send(http, "invoice.payment_succeeded", paid_invoice(), 1)
    r = await http.post("/api/v1/payments/claim", json={"claim_secret": claim})
    assert r.status_code == 201, r.text
    key: str = r.json()["api_key"]
    assert await call(http, key) == (200, None)
    return key


async def test_full_refund_ends_access_until_a_paid_new_period(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    key = await subscriber(http, pool)
    assert await send(http, "charge.refunded", charge(refunded=8900), 10) == "applied"
    assert await call(http, key) == (402, "subscription_refunded")
    # Stripe keeps calling the subscription active for the period it was refunded for.
    await send(http, "customer.subscription.updated", sh.subscription(SUB, CUS, "active"), 20)
    await send(http, "invoice.payment_succeeded", paid_invoice(), 30)
    assert await call(http, key) == (402, "subscription_refunded")
    mine = await http.get(
        "/api/v1/payments/subscription", headers={"Authorization": f"Bearer {key}"}
    )
    assert mine.json()["payment_reversed"] == "refunded"
    # The renewal fails: a new period that is not paid gets no past-due grace.
    renewed = sh.subscription(SUB, CUS, "past_due", period_start=sh.T0 + MONTH)
    await send(http, "customer.subscription.updated", renewed, MONTH)
    assert await call(http, key) == (402, "subscription_refunded")
    # Paid after all: the new period is paid, so it is served.
    await send(http, "invoice.payment_succeeded", paid_invoice("in_test_rev2", at=MONTH), MONTH + 5)
    assert await call(http, key) == (200, None)
    assert await pool.fetchval("SELECT count(*) FROM subscriber_usage") == 2


async def test_partial_refund_keeps_access(http: httpx.AsyncClient, pool: db.Pool) -> None:
    key = await subscriber(http, pool)
    await send(http, "charge.refunded", charge(refunded=1000), 10)
    assert await call(http, key) == (200, None)
    # The rest refunded later: now it is a full refund.
    await send(http, "charge.refunded", charge(refunded=8900), 20)
    assert await call(http, key) == (402, "subscription_refunded")
    # A partial-refund event delivered late does not undo the full refund.
    await send(http, "charge.refunded", charge(refunded=1000), 15)
    assert await call(http, key) == (402, "subscription_refunded")


async def test_dispute_stops_access_until_won(http: httpx.AsyncClient, pool: db.Pool) -> None:
    key = await subscriber(http, pool)
    await send(http, "charge.dispute.created", dispute("needs_response"), 10)
    assert await call(http, key) == (402, "subscription_disputed")
    await send(http, "charge.dispute.funds_withdrawn", dispute("needs_response"), 11)
    await send(http, "customer.subscription.updated", sh.subscription(SUB, CUS, "active"), 20)
    await send(http, "invoice.payment_succeeded", paid_invoice(), 21)
    assert await call(http, key) == (402, "subscription_disputed")
    await send(http, "charge.dispute.closed", dispute("won"), 40)
    assert await call(http, key) == (200, None)
    # A late "created" of the same dispute does not reopen it.
    await send(http, "charge.dispute.updated", dispute("under_review"), 30)
    assert await call(http, key) == (200, None)
    served = await pool.fetchval("SELECT count(*) FROM subscriber_usage")
    assert served == 3  # before the dispute, after it was won, after the late event


async def test_lost_dispute_keeps_access_off(http: httpx.AsyncClient, pool: db.Pool) -> None:
    key = await subscriber(http, pool)
    await send(http, "charge.dispute.created", dispute("needs_response"), 10)
    await send(http, "charge.dispute.closed", dispute("lost"), 50)
    await send(http, "customer.subscription.updated", sh.subscription(SUB, CUS, "active"), 60)
    assert await call(http, key) == (402, "subscription_disputed")
    # Funds reinstated (Stripe's word for a dispute decided for us) restores it.
    await send(http, "charge.dispute.funds_reinstated", dispute("won"), 70)
    assert await call(http, key) == (200, None)


async def test_dispute_before_its_invoice_still_ends_access(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    key = await subscriber(http, pool, invoice=False)
    # The dispute arrives first: nothing yet ties its charge to a subscription.
    assert await send(http, "charge.dispute.created", dispute("needs_response"), 10) == "unmatched"
    await send(http, "invoice.payment_succeeded", paid_invoice(), 1)  # delivered late
    assert await call(http, key) == (402, "subscription_disputed")
    outcome = await pool.fetchval(
        "SELECT outcome FROM stripe_events WHERE type = 'charge.dispute.created'"
    )
    assert outcome == "unmatched"


async def test_refund_tied_by_invoice_payment_in_newer_api_versions(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    """From 2025-03-31 charges and invoices no longer name each other; an InvoicePayment does."""
    key = await subscriber(http, pool, invoice=False)
    await send(http, "invoice.payment_succeeded", paid_invoice(charge=None), 1)
    assert await send(http, "charge.refunded", charge(refunded=8900, invoice=None), 10) == (
        "unmatched"
    )
    assert await call(http, key) == (200, None)
    link = {
        "id": "inpay_test_rev1",
        "object": "invoice_payment",
        "invoice": INV,
        "status": "paid",
        "payment": {"type": "payment_intent", "payment_intent": INTENT},
    }
    await send(http, "invoice_payment.paid", link, 2)
    assert await call(http, key) == (402, "subscription_refunded")


async def test_refund_of_a_one_off_charge_changes_no_access(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    key = await subscriber(http, pool)
    other = {**charge(refunded=500, invoice=None), "id": "ch_test_oneoff", "payment_intent": None}
    other["amount"], other["refunded"] = 500, True
    assert await send(http, "charge.refunded", other, 10) == "unmatched"
    assert await call(http, key) == (200, None)
    row = await pool.fetchrow("SELECT subscription_id, revoked_reason FROM stripe_charges")
    assert dict(row) == {"subscription_id": None, "revoked_reason": "refunded"}
