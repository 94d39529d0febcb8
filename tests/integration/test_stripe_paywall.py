"""One entitlement check: the paywall takes x402 tokens and subscriber keys; a 402 lists both.

The subscription lifecycle is driven by signed webhooks and observed the way a
subscriber sees it: calls to a paid route over real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

import httpx
import pytest

from api import entitlements, paywall
from api.app import create_app
from devkit import api_support
from devkit import stripe_helpers as sh
from watcher import db, keys

CUS, SUB = "cus_TestPaywall01", "sub_TestPaywall01"
PAID = "/x402/example/paid"


@pytest.fixture
async def http(pool: db.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = sh.settings(
        x402_base_payment_address=api_support.BASE_RECEIVER,
        stripe_past_due_grace_hours=0,  # past_due loses access at once, to see it here
    )
    async with (
        sh.api_server(settings, pool) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        yield client


async def send(http: httpx.AsyncClient, etype: str, obj: dict[str, object], at: int) -> None:
    r = await sh.deliver(http, sh.event(etype, obj, sh.T0 + at))
    assert r.status_code == 200, r.text


async def call(http: httpx.AsyncClient, key: str) -> httpx.Response:
    return await http.get(PAID, headers={"Authorization": f"Bearer {key}"})


async def subscribe(http: httpx.AsyncClient, pool: db.Pool) -> str:
    claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
    cid = await pool.fetchval(
        db.q("stripe_insert_checkout"),
        keys.sha256(claim),
        "pro",
        "sub@example.com",
        timedelta(days=7),
    )
    session = {
        "id": "cs_test_pw",
        "object": "checkout.session",
        "customer": CUS,
        "subscription": SUB,
        "client_reference_id": str(cid),
    }
    await send(http, "checkout.session.completed", session, 0)
    await send(http, "customer.subscription.created", sh.subscription(SUB, CUS, "active"), 0)
    r = await http.post("/api/v1/payments/claim", json={"claim_secret": claim})
    assert r.status_code == 201, r.text
    key: str = r.json()["api_key"]
    return key


async def test_subscription_lifecycle_through_the_paywall(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    key = await subscribe(http, pool)
    served = await call(http, key)
    assert served.status_code == 200, served.text
    assert served.json()["result"] == "paid content"
    assert served.json()["remaining"] == 2500 - 1

    failed = sh.invoice("in_test_pw", CUS, SUB, "open", paid=False)
    await send(http, "invoice.payment_failed", failed, 10)
    refused = await call(http, key)
    assert refused.status_code == 402
    assert refused.json()["error"] == "subscription_past_due"
    assert "billing portal" in refused.json()["message"]

    paid = sh.invoice("in_test_pw", CUS, SUB, "paid", paid=True)
    await send(http, "invoice.payment_succeeded", paid, 20)
    assert (await call(http, key)).status_code == 200

    gone = sh.subscription(SUB, CUS, "canceled")
    await send(http, "customer.subscription.deleted", gone, 30)
    after = await call(http, key)
    assert after.status_code == 402
    assert after.json()["error"] == "subscription_revoked"
    assert await pool.fetchval("SELECT count(*) FROM subscriber_usage") == 2


async def test_402_lists_both_ways_to_pay(http: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wsk_unknownkey"}):
        r = await http.get(PAID, headers=headers)
        assert r.status_code == 402
        body = r.json()
        assert {"error", "message", "fix"} <= set(body)
        assert body["accepts"] and body["accepts"][0]["network"] == "base"  # x402 v1
        ways = {w["method"]: w for w in body["ways_to_pay"]}
        assert ways["x402"]["header"] == "x-payment-token"
        tiers = {t["tier"]: t for t in ways["subscription"]["tiers"]}
        assert tiers["pro"] == {
            "tier": "pro",
            "price_usd_per_month": "89.00",
            "monthly_quota": 2500,
            "rate_per_minute": 60,
        }
        assert tiers["team"]["price_usd_per_month"] == "199.00"
        assert tiers["enterprise"]["price_usd_per_month"] == "499.00"
    unknown = await http.get(PAID, headers={"Authorization": "Bearer wsk_unknownkey"})
    assert unknown.json()["error"] == "subscription_unknown_key"


async def test_token_and_key_both_meter_through_one_check(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await api_support.buy_token(http, pool))["token"]
    key = await subscribe(http, pool)
    by_token = await http.get(PAID, headers={"x-payment-token": token})
    by_key = await call(http, key)
    assert (by_token.status_code, by_key.status_code) == (200, 200)
    assert by_token.json()["remaining"] == 9  # $1 buys 10 calls
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 1
    assert await pool.fetchval("SELECT count(*) FROM subscriber_usage") == 1


async def test_rate_limit_is_429_with_retry_after(http: httpx.AsyncClient, pool: db.Pool) -> None:
    key = await subscribe(http, pool)
    for _ in range(3):  # bounded: a minute boundary between fill and call resets the window
        await pool.execute(
            "UPDATE subscriber_keys SET window_start = date_trunc('minute', now()),"
            " window_count = 60"
        )
        limited = await call(http, key)
        if limited.status_code == 429:
            break
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert "60 calls a minute" in limited.json()["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


async def test_rotated_key_replaces_the_old_and_keeps_the_count(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    old = await subscribe(http, pool)
    assert (await call(http, old)).json()["remaining"] == 2500 - 1
    r = await http.post("/api/v1/payments/keys/rotate", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 201, r.text
    new = r.json()["api_key"]
    assert new != old
    assert (await call(http, old)).json()["error"] == "subscription_revoked"
    assert (await call(http, new)).json()["remaining"] == 2500 - 2  # not a fresh quota
    again = await http.post(
        "/api/v1/payments/keys/rotate", headers={"Authorization": f"Bearer {old}"}
    )
    assert (again.status_code, again.json()["error"]) == (401, "unknown_key")


async def test_database_down_is_503_not_500(database_url: str) -> None:
    gone = await db.create_pool(database_url, min_size=1, max_size=2)
    await gone.close()
    async with (
        sh.api_server(sh.settings(), gone) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        claim = await client.post("/api/v1/payments/claim", json={"claim_secret": "wcl_x"})
        invoices = await client.get(
            "/api/v1/payments/invoices", headers={"Authorization": "Bearer wsk_x"}
        )
        webhook = await sh.deliver(
            client,
            sh.event("customer.subscription.created", sh.subscription(SUB, CUS, "active"), 0),
        )
    assert (claim.status_code, claim.json()["error"]) == (503, "service_unavailable")
    assert (invoices.status_code, invoices.json()["error"]) == (503, "service_unavailable")
    assert claim.headers["Retry-After"] == "5"
    assert webhook.status_code == 500  # Stripe retries; nothing was applied


async def test_failed_route_does_not_count_against_the_quota(pool: db.Pool) -> None:
    app = create_app(sh.settings(), pool)

    @app.get("/broken/raises")
    async def raises(charge: Annotated[paywall.Charge, paywall.paid()]) -> None:
        raise RuntimeError("handler bug")

    async with (
        api_support.serve(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        key = await subscribe(client, pool)
        broken = await client.get("/broken/raises", headers={"Authorization": f"Bearer {key}"})
        assert broken.status_code == 500
        served = await call(client, key)
    assert served.json()["remaining"] == 2500 - 1  # only the served call counts
    rows = await pool.fetch("SELECT refunded, status_code FROM subscriber_usage ORDER BY id")
    assert [tuple(r) for r in rows] == [(True, 500), (False, None)]


async def test_subscriber_sees_tier_usage_and_cards(http: httpx.AsyncClient, pool: db.Pool) -> None:
    key = await subscribe(http, pool)
    pm = {
        "id": "pm_test_seen",
        "object": "payment_method",
        "type": "card",
        "customer": CUS,
        "card": {"brand": "mastercard", "last4": "4444", "exp_year": 2031},
    }
    await send(http, "payment_method.attached", pm, 1)
    await call(http, key)
    await call(http, key)
    r = await http.get("/api/v1/payments/subscription", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    me = r.json()
    assert (me["tier"], me["status"], me["used"], me["remaining"]) == ("pro", "active", 2, 2498)
    assert me["cards"] == [{"brand": "mastercard", "last4": "4444"}]
    assert me["key_prefix"] == key[:10] and key not in r.text
    anon = await http.get("/api/v1/payments/subscription")
    assert (anon.status_code, anon.json()["error"]) == (401, "unknown_key")
