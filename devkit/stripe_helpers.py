"""Stripe test helpers: signed webhook deliveries, event builders, a local API server, localstripe.

Signatures use Stripe's real scheme: ``Stripe-Signature: t=<unix>,v1=<hex>``
where ``v1`` is HMAC-SHA256 with the endpoint secret over ``"{t}.{payload}"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx

from api import entitlements
from api.app import create_app
from devkit.anvil import free_port
from devkit.api_support import serve
from watcher import db, keys
from watcher.settings import Settings

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
PRICES = {"pro": "price_pro_test", "team": "price_team_test", "enterprise": "price_ent_test"}
# event.created of the first event in a scenario: recent, as grace periods count from it
T0 = int(time.time()) - 3600

_ids = itertools.count(1)


def settings(**over: Any) -> Settings:
    values: dict[str, Any] = {
        "stripe_secret_key": "sk_test_local",
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_price_id_pro": PRICES["pro"],
        "stripe_price_id_team": PRICES["team"],
        "stripe_price_id_enterprise": PRICES["enterprise"],
        "stripe_past_due_grace_hours": 0,
    }
    values.update(over)
    return Settings(_env_file=None, **values)


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(etype: str, obj: dict[str, Any], created: int, event_id: str | None = None) -> bytes:
    body = {
        "id": event_id or f"evt_test_{next(_ids):06d}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "livemode": False,
        "type": etype,
        "data": {"object": obj},
    }
    return json.dumps(body).encode()


def subscription(
    sub_id: str, customer: str, status: str, *, tier: str = "pro", period_start: int = T0
) -> dict[str, Any]:
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_" + sub_id[4:],
                    "price": {"id": PRICES[tier], "object": "price"},
                    "current_period_start": period_start,
                    "current_period_end": period_start + 30 * 86400,
                }
            ],
        },
    }


def invoice(inv_id: str, customer: str, sub_id: str, status: str, *, paid: bool) -> dict[str, Any]:
    return {
        "id": inv_id,
        "object": "invoice",
        "customer": customer,
        "status": status,
        "paid": paid,
        "attempt_count": 1,
        "currency": "usd",
        "amount_due": 8900,
        "amount_paid": 8900 if paid else 0,
        "created": T0,
        "period_start": T0,
        "period_end": T0 + 30 * 86400,
        "hosted_invoice_url": f"https://invoice.stripe.test/i/{inv_id}",
        "invoice_pdf": f"https://pay.stripe.test/invoice/{inv_id}/pdf",
        "parent": {"subscription_details": {"subscription": sub_id}},
    }


@asynccontextmanager
async def api_server(app_settings: Settings, pool: db.Pool, **state: Any) -> AsyncIterator[str]:
    """The real app under uvicorn on a loopback port; yields its base URL."""
    app = create_app(app_settings, pool)
    for name, value in state.items():
        setattr(app.state, name, value)
    async with serve(app) as url:
        yield url


async def deliver(
    client: httpx.AsyncClient, payload: bytes, *, signature: str | None = None
) -> httpx.Response:
    """POST one webhook delivery, signed now unless a signature is given."""
    headers = {"Stripe-Signature": signature if signature is not None else sign(payload)}
    return await client.post("/api/v1/webhooks/stripe", content=payload, headers=headers)


@asynccontextmanager
async def localstripe() -> AsyncIterator[str]:
    """The localstripe fake Stripe server on a free loopback port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"  # it listens on every interface; we only ever use loopback
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(600):  # bounded: 60 s, for a loaded shared machine
                if proc.poll() is not None:
                    raise AssertionError(f"localstripe exited with {proc.returncode}")
                try:
                    await http.get(url + "/v1/customers", auth=("sk_test_local", ""), timeout=2)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("localstripe did not start within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def subscriber_key(
    http: httpx.AsyncClient, pool: db.Pool, tier: str = "pro", *, customer: str, sub_id: str
) -> str:
    """An active subscription of ``tier`` set up as a subscriber would (checkout, signed
    webhooks, the claim): the raw subscriber key it hands out once."""
    claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
    cid = await pool.fetchval(
        db.q("stripe_insert_checkout"),
        keys.sha256(claim),
        tier,
        "sub@example.com",
        timedelta(days=7),
    )
    session = {
        "id": f"cs_{sub_id}",
        "object": "checkout.session",
        "customer": customer,
        "subscription": sub_id,
        "client_reference_id": str(cid),
    }
    for etype, obj in (
        ("checkout.session.completed", session),
        ("customer.subscription.created", subscription(sub_id, customer, "active", tier=tier)),
    ):
        r = await deliver(http, event(etype, obj, T0))
        assert r.status_code == 200, r.text
    r = await http.post("/api/v1/payments/claim", json={"claim_secret": claim})
    assert r.status_code == 201, r.text
    key: str = r.json()["api_key"]
    return key
