"""Checkout, key claim and portal over real HTTP, against localstripe and recorded responses.

Customers are created on localstripe (a real fake Stripe server, run as a
subprocess on loopback). localstripe has no Checkout or Customer Portal, so
those calls get recorded Stripe responses at the HTTP transport seam; the same
seam injects 429s, card errors and dropped connections.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from api.stripe_client import StripeBilling
from devkit import stripe_helpers as sh
from watcher import db

SESSION = {
    "id": "cs_test_a1B2c3",
    "object": "checkout.session",
    "mode": "subscription",
    "status": "open",
    "url": "https://checkout.stripe.com/c/pay/cs_test_a1B2c3",
}
PORTAL = {
    "id": "bps_test_1",
    "object": "billing_portal.session",
    "url": "https://billing.stripe.com/p/session/test_1",
}
RATE_LIMITED = (
    429,
    {
        "error": {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests",
        }
    },
)
DECLINED = (
    402,
    {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "message": "Your card was declined.",
        }
    },
)
Reply = tuple[int, dict[str, Any]] | Exception


@dataclass
class Seam:
    """The transport: scripted replies per path, everything else forwarded to localstripe."""

    upstream: str
    script: dict[str, list[Reply]] = field(default_factory=dict)
    seen: list[httpx.Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._forward = httpx.AsyncHTTPTransport()

    async def aclose(self) -> None:
        await self._forward.aclose()

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.seen if r.url.path == path]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        await request.aread()
        replies = self.script.get(request.url.path)
        if replies:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
            if isinstance(reply, Exception):
                raise reply
            return httpx.Response(reply[0], json=reply[1])
        local = httpx.URL(self.upstream).copy_with(path=request.url.path, query=request.url.query)
        forwarded = httpx.Request(
            request.method, local, headers=request.headers, content=request.content
        )
        response = await self._forward.handle_async_request(forwarded)
        await response.aread()
        return response


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


@dataclass
class Rig:
    client: httpx.AsyncClient
    pool: db.Pool
    seam: Seam
    billing: StripeBilling


@pytest.fixture
async def rig_factory(pool: db.Pool) -> AsyncIterator[Callable[..., Any]]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        upstream = await stack.enter_async_context(sh.localstripe())

        async def make(**over: Any) -> Rig:
            seam = Seam(upstream)
            stack.push_async_callback(seam.aclose)
            breaker = over.pop("breaker_threshold", 5)
            settings = sh.settings(stripe_api_base=upstream, **over)
            billing = StripeBilling(
                settings,
                transport=httpx.MockTransport(seam.handle),
                base_delay=0.01,
                breaker_threshold=breaker,
            )
            stack.push_async_callback(billing.aclose)
            url = await stack.enter_async_context(sh.api_server(settings, pool, billing=billing))
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
            return Rig(client, pool, seam, billing)

        yield make


async def test_checkout_creates_customer_and_subscription_session(rig_factory: Any) -> None:
    rig: Rig = await rig_factory()
    rig.seam.script["/v1/checkout/sessions"] = [(200, SESSION)]
    r = await rig.client.post(
        "/api/v1/payments/checkout", json={"tier": "team", "email": "ada@example.com"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["checkout_url"] == SESSION["url"] and body["tier"] == "team"
    assert body["claim_secret"].startswith("wcl_")
    row = await rig.pool.fetchrow("SELECT * FROM stripe_checkouts")
    assert row["session_id"] == SESSION["id"] and row["customer_id"].startswith("cus_")
    [customer_call] = rig.seam.calls("/v1/customers")
    assert form(customer_call) == {"email": "ada@example.com"}  # made on localstripe
    assert customer_call.headers["Idempotency-Key"] == f"customer-{row['id']}"
    [call] = rig.seam.calls("/v1/checkout/sessions")
    sent = form(call)
    assert sent["mode"] == "subscription"
    assert sent["line_items[0][price]"] == sh.PRICES["team"]
    assert sent["customer"] == row["customer_id"]
    assert sent["client_reference_id"] == str(row["id"])
    assert "automatic_tax[enabled]" not in sent
    assert call.headers["Idempotency-Key"] == f"checkout-{row['id']}"


async def test_automatic_tax_when_enabled(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(stripe_automatic_tax=True)
    rig.seam.script["/v1/checkout/sessions"] = [(200, SESSION)]
    r = await rig.client.post(
        "/api/v1/payments/checkout", json={"tier": "pro", "email": "ada@example.com"}
    )
    assert r.status_code == 201, r.text
    sent = form(rig.seam.calls("/v1/checkout/sessions")[0])
    assert sent["automatic_tax[enabled]"] == "true"
    assert sent["customer_update[address]"] == "auto"


async def test_rate_limit_is_retried_with_the_same_idempotency_key(rig_factory: Any) -> None:
    rig: Rig = await rig_factory()
    rig.seam.script["/v1/checkout/sessions"] = [RATE_LIMITED, RATE_LIMITED, (200, SESSION)]
    r = await rig.client.post(
        "/api/v1/payments/checkout", json={"tier": "pro", "email": "ada@example.com"}
    )
    assert r.status_code == 201, r.text
    calls = rig.seam.calls("/v1/checkout/sessions")
    assert len(calls) == 3
    assert len({c.headers["Idempotency-Key"] for c in calls}) == 1


async def test_card_error_is_not_retried(rig_factory: Any) -> None:
    rig: Rig = await rig_factory()
    rig.seam.script["/v1/customers"] = [DECLINED]
    r = await rig.client.post(
        "/api/v1/payments/checkout", json={"tier": "pro", "email": "ada@example.com"}
    )
    assert r.status_code == 402
    assert r.json()["error"] == "card_declined" and r.json()["code"] == "card_declined"
    assert len(rig.seam.calls("/v1/customers")) == 1
    assert rig.seam.calls("/v1/checkout/sessions") == []


async def test_unreachable_stripe_gives_502_then_the_breaker_opens(rig_factory: Any) -> None:
    rig: Rig = await rig_factory(breaker_threshold=2)
    rig.seam.script["/v1/customers"] = [httpx.ConnectError("connection refused")]
    for _ in range(2):
        r = await rig.client.post(
            "/api/v1/payments/checkout", json={"tier": "pro", "email": "ada@example.com"}
        )
        assert r.status_code == 502 and r.json()["error"] == "billing_unavailable"
    assert len(rig.seam.calls("/v1/customers")) == 2 * rig.billing.attempts
    shut = await rig.client.post(
        "/api/v1/payments/checkout", json={"tier": "pro", "email": "ada@example.com"}
    )
    assert shut.status_code == 503 and int(shut.headers["Retry-After"]) >= 1
    assert len(rig.seam.calls("/v1/customers")) == 2 * rig.billing.attempts  # not even tried
    scraped = (await rig.client.get("/metrics")).text
    assert "watcher_stripe_circuit_open 1.0" in scraped
    assert 'watcher_stripe_api_requests_total{call="customer",outcome="breaker_open"}' in scraped


async def test_bad_checkout_input_is_a_clear_4xx(rig_factory: Any) -> None:
    rig: Rig = await rig_factory()
    cases = [
        ({"tier": "gold", "email": "a@b.co"}, 400, "unknown_tier"),
        ({"tier": "pro", "email": "not-an-email"}, 400, "bad_email"),
        ({"tier": "pro"}, 422, "invalid_request"),
        ({"tier": "pro", "email": "a@b.co", "card": "4242"}, 422, "invalid_request"),
    ]
    for body, status, error in cases:
        r = await rig.client.post("/api/v1/payments/checkout", json=body)
        assert (r.status_code, r.json()["error"]) == (status, error)
        assert r.json()["fix"]
    raw = await rig.client.post(
        "/api/v1/payments/checkout",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert (raw.status_code, raw.json()["error"]) == (400, "malformed_json")
    assert rig.seam.seen == []


async def test_checkout_to_key_to_portal(rig_factory: Any) -> None:
    rig: Rig = await rig_factory()
    rig.seam.script["/v1/checkout/sessions"] = [(200, SESSION)]
    rig.seam.script["/v1/billing_portal/sessions"] = [(200, PORTAL)]
    started = (
        await rig.client.post(
            "/api/v1/payments/checkout", json={"tier": "pro", "email": "ada@example.com"}
        )
    ).json()
    row = await rig.pool.fetchrow("SELECT id, customer_id FROM stripe_checkouts")
    customer, sub = row["customer_id"], "sub_TestPortal01"
    completed = {
        "id": SESSION["id"],
        "object": "checkout.session",
        "customer": customer,
        "subscription": sub,
        "client_reference_id": str(row["id"]),
    }
    for payload in (
        sh.event("checkout.session.completed", completed, sh.T0),
        sh.event("customer.subscription.created", sh.subscription(sub, customer, "active"), sh.T0),
    ):
        assert (await sh.deliver(rig.client, payload)).status_code == 200
    claimed = await rig.client.post(
        "/api/v1/payments/claim", json={"claim_secret": started["claim_secret"]}
    )
    key = claimed.json()["api_key"]
    r = await rig.client.post("/api/v1/payments/portal", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert r.json()["portal_url"] == PORTAL["url"]
    [call] = rig.seam.calls("/v1/billing_portal/sessions")
    assert form(call)["customer"] == customer
    assert call.headers["Idempotency-Key"].startswith("portal-")
    anon = await rig.client.post("/api/v1/payments/portal")
    assert (anon.status_code, anon.json()["error"]) == (401, "missing_key")
    assert json.loads(anon.text)["message"]
