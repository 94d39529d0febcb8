"""Bad input is a 4xx, never an outage: text PostgreSQL refuses (a NUL, a lone surrogate) is
refused where it enters, with our error body, and nothing is written.

JSON escapes carry both over real HTTP. A NUL inside a header cannot cross our server's HTTP
parser (h11 answers 400 itself), but other ASGI servers pass it on: that case goes through
the app in process; the header's other refusals (control characters, non-ASCII) go over
real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest

from api import paywall
from devkit import stripe_helpers as sh
from devkit.api_support import ADMIN_HEADERS, app_for, buy_token, client, record_payment, serve
from watcher import db

NUL = "a\\u0000b"  # as JSON text: the escape, decoded by the server
SURROGATE = "a\\ud800b"
PAID = "/x402/example/paid"


async def post_raw(http: httpx.AsyncClient, path: str, body: str, **headers: str) -> Any:
    return await http.post(
        path, content=body.encode(), headers={"content-type": "application/json", **headers}
    )


def assert_refused_field(resp: httpx.Response, field: str) -> None:
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "invalid_request"
    assert field in {f["field"] for f in body["fields"]}


@pytest.fixture
async def http(pool: db.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = app_for(pool)

    @app.get("/items/{name}")
    async def item(name: str, charge: Annotated[paywall.Charge, paywall.paid()]) -> Any:
        return {"name": name}

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as h:
        yield h


@pytest.mark.parametrize("bad", [NUL, SURROGATE])
async def test_admin_mark_reason_is_a_422_and_nothing_is_audited(
    http: httpx.AsyncClient, pool: db.Pool, bad: str
) -> None:
    pid, _ = await record_payment(pool)
    body = f'{{"action": "invalidate", "reason": "{bad}"}}'
    resp = await post_raw(http, f"/x402/admin/payments/{pid}/mark", body, **ADMIN_HEADERS)
    assert_refused_field(resp, "reason")
    assert await pool.fetchval("SELECT count(*) FROM admin_audit") == 0
    assert await pool.fetchval("SELECT state FROM payments WHERE id = $1", pid) == "credited"


@pytest.mark.parametrize("bad", [NUL, SURROGATE])
async def test_claim_and_verify_fields_are_422(
    http: httpx.AsyncClient, pool: db.Pool, bad: str
) -> None:
    _, tx = await record_payment(pool, from_address="0x" + "12" * 20)
    invoice = (await http.post("/x402/invoices", json={"chain": "base", "requests": 10})).json()
    cases = [
        ("/x402/verify-payment", {"chain": "base", "tx_hash": "TX"}, "tx_hash"),
        (
            "/x402/generate-token",
            {"chain": "base", "tx_hash": "TX", "signature": "0x11"},
            "tx_hash",
        ),
        ("/x402/generate-token", {"chain": "base", "tx_hash": tx, "signature": "TX"}, "signature"),
        (
            "/x402/generate-token",
            {"invoice_id": invoice["invoice_id"], "claim_secret": "TX"},
            "claim_secret",
        ),
    ]
    for path, fields, name in cases:
        body = json.dumps(fields).replace('"TX"', f'"{bad}"')
        assert_refused_field(await post_raw(http, path, body), name)
    assert await pool.fetchval("SELECT count(*) FROM access_tokens") == 0


async def test_a_nul_in_a_checkout_email_is_a_422_and_no_checkout_is_stored(pool: db.Pool) -> None:
    async with sh.api_server(sh.settings(), pool) as url, httpx.AsyncClient(base_url=url) as http:
        body = f'{{"tier": "pro", "email": "ada{NUL}@example.com"}}'
        assert_refused_field(await post_raw(http, "/api/v1/payments/checkout", body), "email")
        claim = f'{{"claim_secret": "clm_{NUL}"}}'
        assert_refused_field(await post_raw(http, "/api/v1/payments/claim", claim), "claim_secret")
    assert await pool.fetchval("SELECT count(*) FROM stripe_checkouts") == 0


@pytest.mark.parametrize("key", [b"order\x01", b"caf\xe9", b"a\tb", b"x" * 256])
async def test_a_bad_idempotency_key_is_a_400_before_any_charge(
    http: httpx.AsyncClient, pool: db.Pool, key: bytes
) -> None:
    token = (await buy_token(http, pool))["token"]
    resp = await http.get(PAID, headers={"x-payment-token": token, "Idempotency-Key": key})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_header" and resp.json()["header"] == "Idempotency-Key"
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 0


async def test_a_nul_in_the_idempotency_key_is_a_400_not_a_503(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:  # in process: see the module docstring
        token = (await buy_token(http, pool))["token"]
        resp = await http.get(PAID, headers={"x-payment-token": token, "Idempotency-Key": "k\x00"})
        assert resp.status_code == 400 and resp.json()["error"] == "invalid_header"
        assert "retry-after" not in resp.headers
        me = await http.get("/x402/tokens/me", headers={"x-payment-token": token})
        assert me.json()["remaining"] == 10
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 0


async def test_a_nul_in_a_paid_path_is_a_400_before_any_charge(
    http: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await buy_token(http, pool))["token"]
    resp = await http.get("/items/a%00b", headers={"x-payment-token": token})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_path"
    ok = await http.get("/items/a%20b", headers={"x-payment-token": token})
    assert ok.status_code == 200 and ok.json() == {"name": "a b"}
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 1
