"""Reverse-proxy mode over real HTTP: the watcher's API serves the gateway file's routes,
charges them, and forwards to a real upstream (devkit/upstream.py) that checks our
signature; real PostgreSQL, real anvil for x402."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from x402.http.clients.httpx import x402AsyncTransport

from api.app import create_app
from devkit import stripe_helpers as sh
from devkit import upstream as upstream_kit
from devkit.anvil import free_port, start_anvil
from devkit.api_support import buy_token, make_settings, serve
from devkit.x402kit import BASE_CHAIN_ID, PRICE, decode_header, make_world, paying_client
from watcher import db, gateway_config
from watcher.settings import Settings

SECRET = b"gateway-test-secret-0123456789abcdef"


def gateway_file(tmp_path: Path, up: str, down: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[upstreams.api]
url = "{up}"
secret = {{ env = "TEST_GATEWAY_SECRET" }}
[upstreams.api.headers]
X-Api-Key = {{ env = "TEST_UPSTREAM_KEY" }}

# The same server with a short read timeout, for the 504 (a loaded machine must not
# turn the other routes' answers into timeouts).
[upstreams.impatient]
url = "{up}"
timeout_seconds = 1.5
secret = {{ env = "TEST_GATEWAY_SECRET" }}

[upstreams.down]
url = "{down}"
connect_timeout_seconds = 1

[[routes]]
method = "GET"
path = "/v1/echo/{{rest:path}}"
upstream = "api"
upstream_path = "/echo/{{rest}}"
price_usd = "0.30"

[[routes]]
method = "POST"
path = "/v1/echo"
upstream = "api"
upstream_path = "/echo"
price_usd = "0.10"
max_body_bytes = 1000

[[routes]]
method = "GET"
path = "/v1/free"
upstream = "api"
upstream_path = "/echo"
free = true

[[routes]]
method = "GET"
path = "/v1/stream"
upstream = "api"
upstream_path = "/stream"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/gzip"
upstream = "api"
upstream_path = "/gzip"
free = true

[[routes]]
method = "GET"
path = "/v1/sse"
upstream = "api"
upstream_path = "/sse"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/slow"
upstream = "impatient"
upstream_path = "/slow"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/fail"
upstream = "api"
upstream_path = "/fail"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/down"
upstream = "down"
upstream_path = "/anything"
price_usd = "0.10"

[[routes]]
method = "POST"
path = "/v1/upload/{{name}}"
upstream = "api"
upstream_path = "/upload/{{name}}"
price_usd = "0.10"
stream_request = true
max_body_bytes = 10000000

[[routes]]
method = "GET"
path = "/v1/team"
upstream = "api"
upstream_path = "/echo"
price_usd = "0.20"
tiers = ["team", "enterprise"]

[[routes]]
method = "GET"
path = "/v1/odd"
upstream = "api"
upstream_path = "/echo"
price_usd = "0.15"
rails = ["x402"]
"""
    )
    return path


def load(path: Path, settings: Settings) -> gateway_config.GatewayConfig:
    env = {"TEST_GATEWAY_SECRET": SECRET.decode(), "TEST_UPSTREAM_KEY": "upstream-private-key"}
    return gateway_config.load(path, settings, env)


@pytest.fixture
async def up() -> AsyncIterator[upstream_kit.Upstream]:
    async with upstream_kit.upstream(SECRET) as server:
        yield server


@pytest.fixture
async def gw(
    up: upstream_kit.Upstream, pool: db.Pool, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    # Tiers on sale (the file names them); no Stripe key, so the card rail stays off.
    settings = make_settings(
        stripe_price_id_team=sh.PRICES["team"], stripe_price_id_enterprise=sh.PRICES["enterprise"]
    )
    config = load(gateway_file(tmp_path, up.url, f"http://127.0.0.1:{free_port()}"), settings)
    async with (
        serve(create_app(settings, pool, gateway=config)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


async def remaining(pool: db.Pool, token: str) -> int:
    from api import gate

    value: int = await pool.fetchval(
        "SELECT remaining FROM access_tokens WHERE token_hash = $1", gate.token_hash(token)
    )
    return value


async def test_an_unpaid_call_gets_the_routes_price_on_every_rail(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream
) -> None:
    resp = await gw.get("/v1/echo/forecast/paris")
    assert resp.status_code == 402
    body = resp.json()
    assert body["error"] == "payment_required"
    assert (body["price_usd"], body["calls"]) == ("0.30", 3)
    assert body["invoice"]["body"]["requests"] == 30
    assert {a["maxAmountRequired"] for a in body["accepts"]} == {"300000"}
    assert resp.headers["Cache-Control"] == "no-store"
    assert up.accepted == 0 and up.refused == []  # nothing reached the upstream


async def test_a_token_pays_the_exact_cost_and_the_upstream_sees_who_paid_not_the_token(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]  # $1: ten calls
    headers = {
        "x-payment-token": token,
        "X-Payment-Charge-Id": "forged",  # a client's copy of our header
        "X-Payment-Rail": "free",
        "X_Payment_Payer": "someone else",  # an alias some servers read as X-Payment-Payer
        "Connection": "x-hop",
        "X-Hop": "only for the first hop",
        "X-Custom": "kept",
    }
    answers = [await gw.get("/v1/echo/forecast/paris?days=3", headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 402]
    assert answers[3].json()["error"] == "token_exhausted"
    assert [a.headers["X-Payment-Remaining"] for a in answers[:3]] == ["7", "4", "1"]
    assert await remaining(pool, token) == 1
    seen = answers[0].json()
    assert seen["path"] == "/echo/forecast/paris" and seen["query"] == "days=3"
    got = {k.lower(): v for k, v in seen["headers"].items()}
    assert got["x-payment-rail"] == "token"
    assert got["x-payment-charge-id"].startswith("tok_")
    assert got["x-payment-charge-id"] == answers[0].headers["X-Payment-Charge-Id"]
    assert got["x-payment-payer"].startswith("token:")
    assert "x_payment_payer" not in got
    assert got["x-api-key"] == "upstream-private-key"  # injected from the environment
    assert got["x-custom"] == "kept"
    assert "x-payment-token" not in got and "x-hop" not in got
    assert token not in json.dumps(seen)
    assert up.accepted == 3 and up.refused == []
    charge_ids = {a.json()["headers"]["x-payment-charge-id"] for a in answers[:3]}
    assert len(charge_ids) == 3


async def test_a_free_route_passes_without_payment_and_no_route_is_a_404(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream
) -> None:
    free = await gw.get("/v1/free")
    assert free.status_code == 200
    assert free.json()["headers"]["x-payment-rail"] == "free"
    nul = await gw.get("/v1/free?q=%00")
    assert (nul.status_code, nul.json()["error"]) == (400, "invalid_path")
    missing = await gw.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"
    wrong_method = await gw.delete("/v1/free")
    assert wrong_method.status_code == 404
    assert up.accepted == 1


async def test_a_body_over_the_limit_is_refused_before_any_charge(
    gw: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    big = await gw.post("/v1/echo", content=b"x" * 1001, headers={"x-payment-token": token})
    assert big.status_code == 413 and big.json()["error"] == "body_too_large"
    small = await gw.post("/v1/echo", content=b"x" * 1000, headers={"x-payment-token": token})
    assert small.status_code == 200
    assert small.json()["body_length"] == 1000
    assert await remaining(pool, token) == 9


async def test_upstream_failures_refund_the_token_and_answer_in_our_shape(
    gw: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    h = {"x-payment-token": token}
    failed = await gw.get("/v1/fail", headers=h)
    down = await gw.get("/v1/down", headers=h)
    slow = await gw.get("/v1/slow?seconds=4", headers=h)
    assert failed.status_code == 500  # the upstream's own answer, relayed
    assert (down.status_code, down.json()["error"]) == (502, "upstream_unreachable")
    assert (slow.status_code, slow.json()["error"]) == (504, "upstream_timeout")
    assert down.json()["fix"] and slow.json()["message"]
    assert await remaining(pool, token) == 10  # every one given back
    refunded = await pool.fetch("SELECT refunded FROM token_usage ORDER BY id")
    assert [r["refunded"] for r in refunded] == [True, True, True]


async def test_a_streamed_answer_and_server_sent_events_arrive_in_pieces(
    gw: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    h = {"x-payment-token": token}
    for path, n in (("/v1/stream?n=4&delay_ms=300", 4), ("/v1/sse?n=4&delay_ms=300", 4)):
        arrivals: list[float] = []
        async with gw.stream("GET", path, headers=h) as resp:
            assert resp.status_code == 200
            start = time.monotonic()
            async for piece in resp.aiter_raw():
                if piece:
                    arrivals.append(time.monotonic() - start)
        # Relayed as they came: the first piece long before the last was written.
        assert len(arrivals) >= n - 1, arrivals
        assert arrivals[-1] - arrivals[0] >= 0.5, arrivals
    async with gw.stream("GET", "/v1/sse?n=2&delay_ms=10", headers=h) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        text = (await resp.aread()).decode()
    assert text.count("data:") == 2


async def test_a_streamed_upload_reaches_the_upstream_while_it_is_still_sent(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    seen_midway: list[int] = []

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"y" * 100_000
            await asyncio.sleep(0.3)
            if i == 3:
                seen_midway.append(up.uploads.get("big", 0))

    resp = await gw.post("/v1/upload/big", content=pieces(), headers={"x-payment-token": token})
    assert resp.status_code == 200, resp.text
    assert up.uploads["big"] == 500_000
    assert 0 < seen_midway[0] < 500_000  # the upstream was reading before the end
    # Signed as UNSIGNED-PAYLOAD (the body was not read first) and accepted as such.
    assert up.accepted == 1 and up.refused == []


async def test_a_keyed_retry_is_replayed_without_calling_the_upstream_again(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    h = {"x-payment-token": token, "Idempotency-Key": "order-42"}
    first = await gw.get("/v1/echo/once", headers=h)
    again = await gw.get("/v1/echo/once", headers=h)
    other = await gw.get("/v1/echo/other", headers=h)
    assert first.status_code == 200 and again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 422
    assert up.accepted == 1
    assert await remaining(pool, token) == 7
    got = {k.lower() for k in first.json()["headers"]}
    assert "idempotency-key" not in got


async def test_the_upstream_refuses_a_call_that_bypassed_the_gateway(
    up: upstream_kit.Upstream,
) -> None:
    async with httpx.AsyncClient(base_url=up.url) as direct:
        plain = await direct.get("/echo/forecast/paris")
        forged = await direct.get(
            "/echo/forecast/paris",
            headers={
                "X-Payment-Rail": "token",
                "X-Payment-Charge-Id": "tok_1",
                "X-Payment-Timestamp": str(int(time.time())),
                "X-Payment-Body-SHA256": "UNSIGNED-PAYLOAD",
                "X-Payment-Signature": "v1=" + "00" * 32,
            },
        )
    assert plain.status_code == 401 and forged.status_code == 401
    assert up.accepted == 0


async def test_a_route_taking_only_x402_refuses_a_token_and_prices_in_base_units(
    gw: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    resp = await gw.get("/v1/odd", headers={"x-payment-token": token})
    assert resp.status_code == 402
    assert resp.json()["error"] == "rail_not_accepted"
    assert "invoice" not in resp.json() and resp.json()["ways_to_pay"] == []
    assert await remaining(pool, token) == 10


async def test_the_x402_python_client_pays_the_routes_price_once(
    up: upstream_kit.Upstream, pool: db.Pool, tmp_path: Path
) -> None:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        world = await make_world(
            node,
            stripe_price_id_team=sh.PRICES["team"],
            stripe_price_id_enterprise=sh.PRICES["enterprise"],
        )
        config = load(gateway_file(tmp_path, up.url, up.url), world.settings)
        app = create_app(world.settings, pool, gateway=config)
        client = paying_client(world.payer, world.token.address, cap_units=3 * PRICE)
        async with (
            serve(app) as url,
            httpx.AsyncClient(base_url=url, transport=x402AsyncTransport(client)) as paying,
        ):
            paid = await paying.get("/v1/echo/forecast/paris")
            odd = await paying.get("/v1/odd")  # 0.15: not a whole number of calls
        assert paid.status_code == 200, paid.text
        settled = decode_header(paid.headers["PAYMENT-RESPONSE"])
        assert settled["success"] is True and settled["amount"] == str(3 * PRICE)
        seen: dict[str, Any] = {k.lower(): v for k, v in paid.json()["headers"].items()}
        assert seen["x-payment-rail"] == "x402"
        assert seen["x-payment-payer"].lower() == world.payer.address.lower()
        assert seen["x-payment-charge-id"].startswith("x402_base_")
        assert "payment-signature" not in seen and "x-payment" not in seen
        assert odd.status_code == 200, odd.text
        assert decode_header(odd.headers["PAYMENT-RESPONSE"])["amount"] == "150000"
        assert await world.token.balance_of(world.receiver) == 3 * PRICE + 150_000
        rows = await pool.fetch("SELECT amount FROM x402_authorizations ORDER BY id")
        assert [int(r["amount"]) for r in rows] == [3 * PRICE, 150_000]
    finally:
        await node.close()


async def test_a_subscriber_key_of_an_allowed_tier_passes_and_another_tier_does_not(
    up: upstream_kit.Upstream, pool: db.Pool, tmp_path: Path
) -> None:
    settings = sh.settings(x402_base_payment_address="0x" + "ab" * 20)
    config = load(gateway_file(tmp_path, up.url, up.url), settings)
    async with (
        serve(create_app(settings, pool, gateway=config)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        team = await sh.subscriber_key(http, pool, "team", customer="cus_GwT", sub_id="sub_GwT")
        pro = await sh.subscriber_key(http, pool, "pro", customer="cus_GwP", sub_id="sub_GwP")
        ok = await http.get("/v1/team", headers={"Authorization": f"Bearer {team}"})
        refused = await http.get("/v1/team", headers={"Authorization": f"Bearer {pro}"})
        anywhere = await http.get("/v1/echo/a", headers={"Authorization": f"Bearer {pro}"})
    assert ok.status_code == 200, ok.text
    seen = {k.lower(): v for k, v in ok.json()["headers"].items()}
    assert (seen["x-payment-rail"], seen["x-payment-tier"]) == ("subscription", "team")
    assert seen["x-payment-charge-id"].startswith("sub_")
    assert "authorization" not in seen  # the subscriber key is a payment: never forwarded
    assert refused.status_code == 402
    assert refused.json()["error"] == "subscription_tier_not_allowed"
    (way,) = [w for w in refused.json()["ways_to_pay"] if w["method"] == "subscription"]
    assert {t["tier"] for t in way["tiers"]} <= {"team", "enterprise"}
    assert anywhere.status_code == 200  # a route without tiers takes any tier
    used = await pool.fetch("SELECT cost FROM subscriber_usage ORDER BY id")
    assert [r["cost"] for r in used] == [2, 3]  # the routes' prices in calls, nothing else


async def test_an_encoded_answer_is_relayed_as_the_upstream_encoded_it(
    gw: httpx.AsyncClient,
) -> None:
    async with gw.stream("GET", "/v1/gzip", headers={"Accept-Encoding": "gzip"}) as resp:
        raw = b"".join([piece async for piece in resp.aiter_raw()])
    assert resp.status_code == 200
    assert resp.headers["content-encoding"] == "gzip"
    assert int(resp.headers["content-length"]) == len(raw)
    assert gzip.decompress(raw) == upstream_kit.GZIP_TEXT
