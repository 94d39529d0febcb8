"""Stripe webhooks over real HTTP into real PostgreSQL: signed, exactly once, order-proof."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from api import entitlements
from devkit import stripe_helpers as sh
from devkit.api_support import fresh_rate_window
from watcher import db, keys

CUS, SUB = "cus_TestLife0001", "sub_TestLife0001"
Served = tuple[httpx.AsyncClient, db.Pool]


@pytest.fixture
async def api(pool: db.Pool) -> AsyncIterator[Served]:
    async with (
        sh.api_server(sh.settings(), pool) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client, pool


async def start_checkout(pool: db.Pool, tier: str = "pro") -> tuple[str, str]:
    """A checkout row as POST /checkout leaves it; returns (checkout id, claim secret)."""
    claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
    cid = await pool.fetchval(
        db.q("stripe_insert_checkout"),
        keys.sha256(claim),
        tier,
        "buyer@example.com",
        timedelta(days=7),
    )
    return str(cid), claim


async def access(pool: db.Pool, key: str, grace_hours: int = 0) -> entitlements.KeyCheck:
    async with pool.acquire() as conn:
        return await entitlements.consume_subscriber_key(
            conn, key, 1, "/api/v1/test", grace=timedelta(hours=grace_hours)
        )


async def ok(client: httpx.AsyncClient, payload: bytes, outcome: str = "applied") -> None:
    r = await sh.deliver(client, payload)
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == outcome


async def sub_row(pool: db.Pool, sub_id: str = SUB) -> dict[str, object]:
    row = await pool.fetchrow("SELECT * FROM stripe_subscriptions WHERE id = $1", sub_id)
    assert row is not None
    return dict(row)


async def test_lifecycle_is_reflected_in_access(api: Served) -> None:
    client, pool = api
    cid, claim = await start_checkout(pool)
    session = {
        "id": "cs_test_life",
        "object": "checkout.session",
        "client_reference_id": cid,
        "customer": CUS,
        "subscription": SUB,
        "customer_details": {"email": "buyer@example.com"},
    }
    await ok(client, sh.event("checkout.session.completed", session, sh.T0))
    await ok(
        client,
        sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "incomplete"), sh.T0),
    )
    early = await client.post("/api/v1/payments/claim", json={"claim_secret": claim})
    assert early.status_code == 409 and "incomplete" in early.json()["message"]

    await ok(
        client,
        sh.event("customer.subscription.updated", sh.subscription(SUB, CUS, "active"), sh.T0 + 5),
    )
    claimed = await client.post("/api/v1/payments/claim", json={"claim_secret": claim})
    assert claimed.status_code == 201, claimed.text
    key = claimed.json()["api_key"]
    assert claimed.json()["tier"] == "pro"
    again = await client.post("/api/v1/payments/claim", json={"claim_secret": claim})
    assert again.status_code == 409 and "only once" in again.json()["message"]
    stored = await pool.fetchval("SELECT key_hash FROM subscriber_keys")
    assert stored == keys.sha256(key)  # hashed, never the key itself
    assert (await access(pool, key)).ok

    inv = sh.invoice("in_test_fail", CUS, SUB, "open", paid=False)
    await ok(client, sh.event("invoice.payment_failed", inv, sh.T0 + 10))
    assert (await sub_row(pool))["status"] == "past_due"
    assert (await access(pool, key, grace_hours=72)).ok  # inside the grace period
    refused = await access(pool, key, grace_hours=0)
    assert (refused.ok, refused.reason, refused.status_code) == (False, "past_due", 402)

    paid = sh.invoice("in_test_fail", CUS, SUB, "paid", paid=True)
    await ok(client, sh.event("invoice.payment_succeeded", paid, sh.T0 + 20))
    assert (await sub_row(pool))["status"] == "active"
    assert (await sub_row(pool))["past_due_since"] is None
    assert (await access(pool, key)).ok

    gone = sh.subscription(SUB, CUS, "canceled")
    gone["canceled_at"] = sh.T0 + 30
    await ok(client, sh.event("customer.subscription.deleted", gone, sh.T0 + 30))
    after = await access(pool, key, grace_hours=72)
    assert (after.ok, after.reason) == (False, "revoked")
    assert "canceled" in after.detail
    used = await pool.fetchval("SELECT count(*) FROM subscriber_usage")
    assert used == 3  # exactly the three served calls were metered


async def test_bad_missing_and_stale_signatures_store_nothing(api: Served) -> None:
    client, pool = api
    payload = sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0)
    wrong = await sh.deliver(client, payload, signature=sh.sign(payload, "whsec_other"))
    missing = await client.post("/api/v1/webhooks/stripe", content=payload)
    stale = await sh.deliver(client, payload, signature=sh.sign(payload, t=int(time.time()) - 301))
    tampered = await sh.deliver(
        client, payload.replace(b"active", b"trialing"), signature=sh.sign(payload)
    )
    for r in (wrong, missing, stale, tampered):
        assert r.status_code == 400
        assert r.json()["error"] == "bad_signature"
    assert await pool.fetchval("SELECT count(*) FROM stripe_events") == 0
    assert await pool.fetchval("SELECT count(*) FROM stripe_subscriptions") == 0


async def test_duplicate_delivery_has_one_effect(api: Served) -> None:
    client, pool = api
    inv = sh.invoice("in_test_dup", CUS, SUB, "open", paid=False)
    await ok(
        client,
        sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0),
    )
    payload = sh.event("invoice.payment_failed", inv, sh.T0 + 10, event_id="evt_test_dup")
    # Two deliveries racing, then a third late one: one applies, the others are acknowledged.
    first = await asyncio.gather(sh.deliver(client, payload), sh.deliver(client, payload))
    late = await sh.deliver(client, payload)
    outcomes = sorted(r.json()["outcome"] for r in [*first, late])
    assert [r.status_code for r in [*first, late]] == [200, 200, 200]
    assert outcomes == ["applied", "duplicate", "duplicate"]
    assert await pool.fetchval("SELECT count(*) FROM stripe_events WHERE id = 'evt_test_dup'") == 1
    assert (await sub_row(pool))["state_event_id"] == "evt_test_dup"


async def test_out_of_order_deliveries_never_regress(api: Served) -> None:
    client, pool = api
    active = sh.subscription(SUB, CUS, "active")
    # Newer first: an active state at T0+100, then a stale past_due from T0+50.
    await ok(client, sh.event("customer.subscription.updated", active, sh.T0 + 100))
    late = sh.event(
        "customer.subscription.updated", sh.subscription(SUB, CUS, "past_due"), sh.T0 + 50
    )
    await ok(client, late, "stale")
    # Same second: incomplete cannot follow active.
    same = sh.event(
        "customer.subscription.created", sh.subscription(SUB, CUS, "incomplete"), sh.T0 + 100
    )
    await ok(client, same, "stale")
    assert (await sub_row(pool))["status"] == "active"
    # Deleted arrives before an older update: canceled is final.
    await ok(
        client,
        sh.event(
            "customer.subscription.deleted", sh.subscription(SUB, CUS, "canceled"), sh.T0 + 300
        ),
    )
    older = sh.event(
        "customer.subscription.updated",
        sh.subscription(SUB, CUS, "active", tier="team"),
        sh.T0 + 200,
    )
    await ok(client, older, "stale")
    row = await sub_row(pool)
    assert (row["status"], row["tier"]) == ("canceled", "pro")
    # An old invoice success never revives it either.
    paid = sh.invoice("in_test_old", CUS, SUB, "paid", paid=True)
    await ok(client, sh.event("invoice.payment_succeeded", paid, sh.T0 + 250))
    assert (await sub_row(pool))["status"] == "canceled"
    outcomes = await pool.fetch("SELECT outcome FROM stripe_events ORDER BY received_at")
    assert [r["outcome"] for r in outcomes] == [
        "applied",
        "stale",
        "stale",
        "applied",
        "stale",
        "applied",
    ]


async def test_unknown_type_is_stored_and_acknowledged(api: Served) -> None:
    client, pool = api
    payload = sh.event("customer.tax_id.created", {"id": "txi_test_1", "object": "tax_id"}, sh.T0)
    await ok(client, payload, "ignored")
    row = await pool.fetchrow("SELECT type, outcome, object_id FROM stripe_events")
    assert dict(row) == {
        "type": "customer.tax_id.created",
        "outcome": "ignored",
        "object_id": "txi_test_1",
    }


async def test_failure_mid_apply_then_retry_applies_once(api: Served) -> None:
    client, pool = api
    # A fault inside the database, after the event row and the customer were written.
    await pool.execute(
        "CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'injected fault'; END $$;"
        " CREATE TRIGGER fault BEFORE INSERT ON stripe_subscriptions"
        " FOR EACH ROW EXECUTE FUNCTION fail_once();"
    )
    payload = sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0)
    failed = await sh.deliver(client, payload)
    assert failed.status_code == 500
    assert failed.json()["error"] == "apply_failed"
    assert await pool.fetchval("SELECT count(*) FROM stripe_events") == 0  # not marked processed
    assert await pool.fetchval("SELECT count(*) FROM stripe_customers") == 0  # no half effect
    why = await pool.fetchval("SELECT error FROM stripe_event_failures")
    assert "injected fault" in why
    await pool.execute("DROP TRIGGER fault ON stripe_subscriptions")
    await ok(client, payload)  # Stripe's retry: same event id, same body
    await ok(client, payload, "duplicate")
    assert (await sub_row(pool))["status"] == "active"
    assert await pool.fetchval("SELECT count(*) FROM stripe_events") == 1


async def test_payment_methods_keep_brand_and_last4_only(api: Served) -> None:
    client, pool = api
    pm = {
        "id": "pm_test_card1",
        "object": "payment_method",
        "type": "card",
        "customer": CUS,
        "billing_details": {"name": "Ada Lovelace", "address": {"line1": "1 Street"}},
        "card": {
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "fingerprint": "Xt5EWLLDS7FJjR1c",
            "funding": "credit",
        },
    }
    await ok(client, sh.event("payment_method.attached", pm, sh.T0))
    row = await pool.fetchrow("SELECT * FROM stripe_payment_methods")
    assert (row["customer_id"], row["brand"], row["last4"]) == (CUS, "visa", "4242")
    stored = json.dumps(json.loads(await pool.fetchval("SELECT payload FROM stripe_events")))
    for secret in ("Ada Lovelace", "fingerprint", "exp_month", "2030", "1 Street"):
        assert secret not in stored
    await ok(client, sh.event("payment_method.detached", {**pm, "customer": None}, sh.T0 + 5))
    assert await pool.fetchval("SELECT customer_id FROM stripe_payment_methods") is None
    # An attach from before the detach, delivered late, does not re-attach.
    await ok(client, sh.event("payment_method.attached", pm, sh.T0 + 1), "stale")
    assert await pool.fetchval("SELECT customer_id FROM stripe_payment_methods") is None


async def test_upgrade_changes_tier_and_quota_at_once(api: Served) -> None:
    client, pool = api
    cid, claim = await start_checkout(pool)
    session = {
        "id": "cs_test_up",
        "object": "checkout.session",
        "client_reference_id": cid,
        "customer": CUS,
        "subscription": SUB,
    }
    await ok(client, sh.event("checkout.session.completed", session, sh.T0))
    await ok(
        client,
        sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0),
    )
    key = (await client.post("/api/v1/payments/claim", json={"claim_secret": claim})).json()[
        "api_key"
    ]
    await pool.execute("UPDATE stripe_tiers SET monthly_quota = 2 WHERE tier = 'pro'")
    assert (await access(pool, key)).ok and (await access(pool, key)).remaining == 0
    exhausted = await access(pool, key)
    assert (exhausted.reason, exhausted.status_code) == ("quota_exhausted", 402)
    upgraded = sh.subscription(SUB, CUS, "active", tier="team")
    await ok(client, sh.event("customer.subscription.updated", upgraded, sh.T0 + 60))
    check = await access(pool, key)
    assert (check.ok, check.tier, check.remaining) == (True, "team", 7500 - 3)
    # A new billing period resets the count.
    renewed = sh.subscription(SUB, CUS, "active", tier="team", period_start=sh.T0 + 30 * 86400)
    await ok(client, sh.event("customer.subscription.updated", renewed, sh.T0 + 30 * 86400))
    assert (await access(pool, key)).remaining == 7500 - 1


async def test_concurrent_calls_never_overdraw(api: Served) -> None:
    await fresh_rate_window()
    client, pool = api
    cid, claim = await start_checkout(pool)
    session = {
        "id": "cs_test_c",
        "object": "checkout.session",
        "client_reference_id": cid,
        "customer": CUS,
        "subscription": SUB,
    }
    await ok(client, sh.event("checkout.session.completed", session, sh.T0))
    await ok(
        client,
        sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0),
    )
    key = (await client.post("/api/v1/payments/claim", json={"claim_secret": claim})).json()[
        "api_key"
    ]
    await pool.execute("UPDATE stripe_tiers SET monthly_quota = 5, rate_per_minute = 1000")
    results = await asyncio.gather(*(access(pool, key) for _ in range(20)))
    assert sum(r.ok for r in results) == 5
    assert await pool.fetchval("SELECT count(*) FROM subscriber_usage") == 5
    assert await pool.fetchval("SELECT used FROM subscriber_keys") == 5
    await pool.execute("UPDATE stripe_tiers SET monthly_quota = 1000, rate_per_minute = 5")
    limited = await access(pool, key)
    assert (limited.reason, limited.status_code) == ("rate_limited", 429)


async def test_invoices_list_for_the_key_holder(api: Served) -> None:
    client, pool = api
    cid, claim = await start_checkout(pool)
    session = {
        "id": "cs_test_inv",
        "object": "checkout.session",
        "client_reference_id": cid,
        "customer": CUS,
        "subscription": SUB,
    }
    await ok(client, sh.event("checkout.session.completed", session, sh.T0))
    await ok(
        client,
        sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), sh.T0),
    )
    await ok(
        client,
        sh.event(
            "invoice.payment_succeeded", sh.invoice("in_test_a", CUS, SUB, "paid", paid=True), sh.T0
        ),
    )
    key = (await client.post("/api/v1/payments/claim", json={"claim_secret": claim})).json()[
        "api_key"
    ]
    r = await client.get("/api/v1/payments/invoices", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    [inv] = r.json()["invoices"]
    assert inv["id"] == "in_test_a" and inv["status"] == "paid" and inv["amount_paid"] == 8900
    assert inv["hosted_invoice_url"].endswith("/i/in_test_a")
    assert inv["invoice_pdf"].endswith("/in_test_a/pdf")
    anon = await client.get("/api/v1/payments/invoices")
    assert anon.status_code == 401 and anon.json()["error"] == "missing_key"
    bogus = await client.get("/api/v1/payments/invoices", headers={"Authorization": "Bearer wsk_x"})
    assert bogus.status_code == 401 and bogus.json()["error"] == "unknown_key"


async def test_claim_refusals_are_clear(api: Served) -> None:
    client, _pool = api
    cases = (
        ({"claim_secret": "wcl_nope"}, 404),
        ({"claim_secret": "nope"}, 400),
        ({"claim_secret": 5}, 422),
        ([], 422),
    )
    for body, code in cases:
        r = await client.post("/api/v1/payments/claim", json=body)
        assert r.status_code == code and r.json()["message"] and r.json()["fix"]


async def test_older_api_version_shapes_are_read(api: Served) -> None:
    """Before 2025-03-31 the period sat on the subscription and invoices named it directly."""
    client, pool = api
    legacy = sh.subscription(SUB, CUS, "active")
    item = legacy["items"]["data"][0]
    legacy["current_period_start"] = item.pop("current_period_start")
    legacy["current_period_end"] = item.pop("current_period_end")
    await ok(client, sh.event("customer.subscription.created", legacy, sh.T0))
    row = await sub_row(pool)
    assert row["current_period_end"] is not None and row["tier"] == "pro"
    inv = sh.invoice("in_test_legacy", CUS, SUB, "open", paid=False)
    del inv["parent"]
    inv["subscription"] = SUB
    await ok(client, sh.event("invoice.payment_failed", inv, sh.T0 + 5))
    assert (await sub_row(pool))["status"] == "past_due"
    assert (
        await pool.fetchval(
            "SELECT subscription_id FROM stripe_invoices WHERE id = 'in_test_legacy'"
        )
        == SUB
    )


async def test_racing_claims_mint_exactly_one_key(api: Served) -> None:
    client, pool = api
    cid, claim = await start_checkout(pool)
    session = {
        "id": "cs_test_race",
        "object": "checkout.session",
        "client_reference_id": cid,
        "customer": CUS,
        "subscription": SUB,
    }
    await ok(client, sh.event("checkout.session.completed", session, sh.T0))
    active = sh.subscription(SUB, CUS, "active")
    await ok(client, sh.event("customer.subscription.created", active, sh.T0))
    answers = await asyncio.gather(
        *(client.post("/api/v1/payments/claim", json={"claim_secret": claim}) for _ in range(8))
    )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 7
    assert await pool.fetchval("SELECT count(*) FROM subscriber_keys") == 1


async def test_signed_but_malformed_event_is_500_and_recorded(api: Served) -> None:
    client, pool = api
    broken = {"id": SUB, "object": "subscription", "status": "active"}  # no customer, no items
    r = await sh.deliver(client, sh.event("customer.subscription.updated", broken, sh.T0))
    assert (r.status_code, r.json()["error"]) == (500, "apply_failed")
    assert await pool.fetchval("SELECT count(*) FROM stripe_events") == 0
    assert "KeyError" in await pool.fetchval("SELECT error FROM stripe_event_failures")
