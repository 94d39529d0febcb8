"""Schema-driven fuzz of the Stripe routes with the rail switched on: no 5xx, every 4xx shaped.

Stripe itself is recorded responses at the HTTP transport seam, so a
generated checkout that passes validation still never leaves the machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck

from api.stripe_client import StripeBilling
from devkit import stripe_helpers as sh
from watcher import db

EXAMPLES_PER_OPERATION = 40
RECORDED = {
    "/v1/customers": {"id": "cus_TestFuzz0001", "object": "customer"},
    "/v1/checkout/sessions": {
        "id": "cs_test_fuzz",
        "object": "checkout.session",
        "url": "https://checkout.stripe.com/c/pay/cs_test_fuzz",
    },
    "/v1/billing_portal/sessions": {
        "id": "bps_test_fuzz",
        "object": "billing_portal.session",
        "url": "https://billing.stripe.com/p/session/test_fuzz",
    },
}


def recorded(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=RECORDED[request.url.path])


def fuzz(base_url: str) -> dict[str, Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    seen: dict[str, Any] = {"calls": 0, "statuses": set(), "bad": []}
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        if "/payments/" not in operation.path and "/webhooks/" not in operation.path:
            continue

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            resp = case.call(base_url=base_url, session=session, timeout=30)
            seen["calls"] += 1
            seen["statuses"].add(resp.status_code)
            shaped = 400 <= resp.status_code < 500 and {"error", "message", "fix"} <= set(
                resp.json()
            )
            if resp.status_code >= 500 or (400 <= resp.status_code < 500 and not shaped):
                seen["bad"].append((case.method, case.path, resp.status_code, resp.text))

        check()
    return seen


async def test_stripe_routes_fuzz_without_server_errors(pool: db.Pool) -> None:
    settings = sh.settings(stripe_api_base="http://127.0.0.1:9")
    billing = StripeBilling(settings, transport=httpx.MockTransport(recorded))
    try:
        async with sh.api_server(settings, pool, billing=billing) as url:
            seen = await asyncio.to_thread(fuzz, url)
    finally:
        await billing.aclose()
    assert seen["bad"] == []
    assert seen["calls"] > 100
    assert 400 in seen["statuses"] and 401 in seen["statuses"]
