"""POST /gateway/charge as a backend meets it: a service key, a route of the gateway file,
the payer's payment, an idempotency key; real PostgreSQL, real HTTP, x402 on anvil."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from x402.http.x402_http_client import x402HTTPClient
from x402.schemas import PaymentRequired

from api.app import create_app
from devkit import api_support
from devkit import stripe_helpers as sh
from devkit.anvil import Anvil, start_anvil
from devkit.x402kit import (
    BASE_CHAIN_ID,
    PRICE,
    World,
    decode_header,
    make_world,
    paying_client,
)
from tests.integration.test_stripe_paywall import subscribe
from watcher import db, gateway_config, keys, service_keys
from watcher.settings import Settings

FORECAST = "GET /v1/forecast/{city}"  # $0.30: three calls
TEAM_ONLY = "GET /v1/team/{thing}"  # $0.10, subscribers of the team tier only
HEALTH = "GET /v1/health"
GATEWAY_TOML = """
[upstreams.weather]
url = "http://127.0.0.1:9"

[[routes]]
method = "GET"
path = "/v1/forecast/{city}"
upstream = "weather"
price_usd = "0.30"

[[routes]]
method = "GET"
path = "/v1/team/{thing}"
upstream = "weather"
price_usd = "0.10"
tiers = ["team"]

[[routes]]
method = "GET"
path = "/v1/health"
upstream = "weather"
free = true
"""


TEAM_ROUTE = GATEWAY_TOML[GATEWAY_TOML.index('[[routes]]\nmethod = "GET"\npath = "/v1/team') :]
TEAM_ROUTE = TEAM_ROUTE[: TEAM_ROUTE.index("[[routes]]", 1)]
# Without Stripe configured no tier is sold: the file without the tier-bound route.
NO_TIERS_TOML = GATEWAY_TOML.replace(TEAM_ROUTE, "")


def gateway(
    tmp_path: Path, settings: Settings, text: str = GATEWAY_TOML
) -> gateway_config.GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return gateway_config.load(path, settings)


@pytest.fixture
async def server(pool: db.Pool, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = sh.settings(
        x402_base_payment_address=api_support.BASE_RECEIVER, x402_admin_key=api_support.ADMIN_KEY
    )
    app = create_app(settings, pool, gateway=gateway(tmp_path, settings))
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        yield http


async def key_for(pool: db.Pool, routes: list[str] | None = None) -> dict[str, str]:
    made = await service_keys.create(pool, "worker", routes, operator="tester", client="test")
    return {"Authorization": f"Bearer {made.key}"}


def body(idem: str, payment: dict[str, Any] | None, route: Any = FORECAST) -> dict[str, Any]:
    out: dict[str, Any] = {"route": route, "idempotency_key": idem}
    if payment is not None:
        out["payment"] = payment
    return out


async def remaining(pool: db.Pool, token: str) -> int:
    value = await pool.fetchval(
        "SELECT remaining FROM access_tokens WHERE token_hash = $1", keys.sha256(token)
    )
    return int(value)


async def test_keys_missing_unknown_revoked_or_out_of_scope_are_refused(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await api_support.buy_token(server, pool))["token"]
    pay = body("k1", {"token": token})
    scoped = await key_for(pool, [HEALTH])
    revoked = await key_for(pool, None)
    revoked_id = int(await pool.fetchval("SELECT max(id) FROM service_keys"))
    assert await service_keys.revoke(pool, revoked_id, "leaked", operator="tester", client="test")
    answers = [
        await server.post("/gateway/charge", json=pay),
        await server.post(
            "/gateway/charge", json=pay, headers={"Authorization": "Bearer wsv_nope"}
        ),
        await server.post("/gateway/charge", json=pay, headers=revoked),
        await server.post("/gateway/charge", json=pay, headers=scoped),
    ]
    assert [(a.status_code, a.json()["error"]) for a in answers] == [
        (401, "service_key_required"),
        (401, "unknown_service_key"),
        (403, "service_key_revoked"),
        (403, "route_not_allowed"),
    ]
    assert all(set(a.json()) >= {"error", "message", "fix"} for a in answers)
    assert await remaining(pool, token) == 10  # nothing charged
    unknown = await server.post(
        "/gateway/charge", json=body("k2", {"token": token}, "GET /nope"), headers=scoped
    )
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_route")


async def test_a_token_pays_the_routes_calls_exactly(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await api_support.buy_token(server, pool))["token"]  # 10 calls
    auth = await key_for(pool, [FORECAST])
    concrete = {"method": "get", "path": "/v1/forecast/paris"}
    answers = [
        await server.post(
            "/gateway/charge", json=body(f"t{i}", {"token": token}, route), headers=auth
        )
        for i, route in enumerate([FORECAST, concrete, FORECAST, FORECAST])
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 402]
    first = answers[0].json()
    assert first["charged"] is True and first["rail"] == "token"
    assert (first["units"], first["price_usd"], first["remaining"]) == (300_000, "0.30", 7)
    assert first["charge_id"].startswith("tok_") and first["payer"].startswith("token:")
    assert [a.json()["remaining"] for a in answers[:3]] == [7, 4, 1]
    refused = answers[3].json()
    assert (refused["error"], refused["charged"]) == ("token_exhausted", False)
    assert await remaining(pool, token) == 1
    costs = await pool.fetch("SELECT endpoint, cost FROM token_usage ORDER BY id")
    assert [(r["endpoint"], r["cost"]) for r in costs] == [(FORECAST, 3)] * 3
    last_used = await pool.fetchval("SELECT last_used_at FROM service_keys")
    assert last_used is not None


async def test_the_402_carries_the_routes_price_for_the_backend_to_relay(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    auth = await key_for(pool, None)
    resp = await server.post("/gateway/charge", json=body("n1", None), headers=auth)
    assert resp.status_code == 402
    got = resp.json()
    assert (got["error"], got["charged"], got["price_usd"], got["calls"]) == (
        "payment_required",
        False,
        "0.30",
        3,
    )
    (v1,) = [a for a in got["accepts"] if a["network"] == "base"]
    assert v1["maxAmountRequired"] == "300000"
    assert v1["resource"].endswith("/v1/forecast/{city}")
    # No relayer here: no v2 offer, the body alone (the x402 test sees the header relayed).
    assert got["payer_headers"] == {"Cache-Control": "no-store"}
    # A refusal charged nothing and frees its key: the retry with a payment is charged.
    token = (await api_support.buy_token(server, pool))["token"]
    free = await server.post("/gateway/charge", json=body("h1", None, HEALTH), headers=auth)
    assert (free.status_code, free.json()["charged"], free.json()["rail"]) == (200, False, "free")
    paid = await server.post("/gateway/charge", json=body("n2", {"token": token}), headers=auth)
    assert paid.status_code == 200 and await remaining(pool, token) == 7


async def test_the_same_key_twice_charges_once_another_body_is_422(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await api_support.buy_token(server, pool))["token"]
    auth = await key_for(pool, None)
    first = await server.post("/gateway/charge", json=body("same", {"token": token}), headers=auth)
    again = await server.post("/gateway/charge", json=body("same", {"token": token}), headers=auth)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = await server.post(
        "/gateway/charge",
        json=body("same", {"token": token}, {"method": "GET", "path": "/v1/forecast/rome"}),
        headers=auth,
    )
    assert (other.status_code, other.json()["error"]) == (422, "idempotency_key_reused")
    # Keys are per service key: another backend's "same" is its own call.
    elsewhere = await server.post(
        "/gateway/charge", json=body("same", {"token": token}), headers=await key_for(pool, None)
    )
    assert (
        elsewhere.status_code == 200 and elsewhere.json()["charge_id"] != first.json()["charge_id"]
    )
    assert await remaining(pool, token) == 4
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 2
    # After 24 h a key is forgotten: the same body under it is a new (charged) call,
    # and the operator's cleanup drops what expired.
    await pool.execute("UPDATE gateway_charges SET expires_at = now() - interval '1 second'")
    later = await server.post("/gateway/charge", json=body("same", {"token": token}), headers=auth)
    assert later.status_code == 200 and "Idempotent-Replayed" not in later.headers
    assert await remaining(pool, token) == 1
    cleanup = await server.post("/x402/cleanup", headers=api_support.ADMIN_HEADERS)
    assert cleanup.json()["idempotency_keys_forgotten"] == 1  # the other backend's
    assert await pool.fetchval("SELECT count(*) FROM gateway_charges") == 1


async def test_ten_identical_requests_at_once_charge_once(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await api_support.buy_token(server, pool))["token"]
    auth = await key_for(pool, None)
    answers = await asyncio.gather(
        *(
            server.post("/gateway/charge", json=body("race", {"token": token}), headers=auth)
            for _ in range(10)
        )
    )
    assert [a.status_code for a in answers] == [200] * 10
    assert len({a.json()["charge_id"] for a in answers}) == 1
    assert await remaining(pool, token) == 7
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 1


async def test_a_subscriber_of_an_allowed_tier_passes_another_does_not(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    key = await subscribe(server, pool)  # a pro subscriber
    auth = await key_for(pool, None)
    pro = await server.post(
        "/gateway/charge", json=body("s1", {"subscriber_key": key}), headers=auth
    )
    again = await server.post(
        "/gateway/charge", json=body("s1", {"subscriber_key": key}), headers=auth
    )
    team = await server.post(
        "/gateway/charge", json=body("s2", {"subscriber_key": key}, TEAM_ONLY), headers=auth
    )
    assert pro.status_code == 200, pro.text
    assert (pro.json()["rail"], pro.json()["tier"], pro.json()["remaining"]) == (
        "subscription",
        "pro",
        2500 - 3,
    )
    assert again.json() == pro.json()  # metered once
    assert team.status_code == 402 and team.json()["charged"] is False
    assert team.json()["error"].startswith("subscription_")
    used = await pool.fetch("SELECT endpoint, cost FROM subscriber_usage WHERE NOT refunded")
    assert [(r["endpoint"], r["cost"]) for r in used] == [(FORECAST, 3)]
    # The backend's job failed: the calls go back to the subscription, once.
    back = await server.post(f"/gateway/charge/{pro.json()['charge_id']}/refund", headers=auth)
    assert back.status_code == 200, back.text
    assert await pool.fetchval("SELECT count(*) FROM subscriber_usage WHERE NOT refunded") == 0
    assert await pool.fetchval("SELECT used FROM subscriber_keys") == 0


async def test_refund_gives_a_token_charge_back_once_and_frees_the_key(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    token = (await api_support.buy_token(server, pool))["token"]
    auth = await key_for(pool, None)
    charged = (
        await server.post("/gateway/charge", json=body("job", {"token": token}), headers=auth)
    ).json()
    url = f"/gateway/charge/{charged['charge_id']}/refund"
    stranger = await server.post(url, headers=await key_for(pool, None))
    back = await server.post(url, headers=auth)
    twice = await server.post(url, headers=auth)
    assert (stranger.status_code, stranger.json()["error"]) == (404, "unknown_charge")
    assert back.status_code == 200 and back.json()["remaining"] == 10
    assert (twice.status_code, twice.json()["error"]) == (409, "charge_already_refunded")
    assert await remaining(pool, token) == 10
    retry = await server.post("/gateway/charge", json=body("job", {"token": token}), headers=auth)
    assert retry.status_code == 200 and retry.json()["charge_id"] != charged["charge_id"]
    assert await remaining(pool, token) == 7
    # Past the refund window: refused, nothing given back.
    await pool.execute("UPDATE gateway_charges SET created_at = now() - interval '16 minutes'")
    late = await server.post(f"/gateway/charge/{retry.json()['charge_id']}/refund", headers=auth)
    assert (late.status_code, late.json()["error"]) == (409, "refund_window_passed")
    assert await remaining(pool, token) == 7


async def test_a_database_fault_is_503_never_a_charge(
    server: httpx.AsyncClient, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    token = (await api_support.buy_token(server, pool))["token"]
    auth = await key_for(pool, None)
    # Another session holds the token's row: the charge cannot run within its bound.
    async with pool.acquire() as blocker, blocker.transaction():
        await blocker.execute(
            "SELECT 1 FROM access_tokens WHERE token_hash = $1 FOR UPDATE", keys.sha256(token)
        )
        stuck = await server.post(
            "/gateway/charge", json=body("db", {"token": token}), headers=auth
        )
    assert (stuck.status_code, stuck.json()["error"]) == (503, "service_unavailable")
    assert "charged" not in stuck.json()
    assert await remaining(pool, token) == 10
    assert await pool.fetchval("SELECT count(*) FROM gateway_charges") == 0  # key freed
    retry = await server.post("/gateway/charge", json=body("db", {"token": token}), headers=auth)
    assert retry.status_code == 200 and await remaining(pool, token) == 7
    # The database gone altogether: 503 before anything.
    gone = await db.create_pool(database_url, min_size=1, max_size=2)
    await gone.close()
    settings = sh.settings()
    app = create_app(settings, gone, gateway=gateway(tmp_path, settings))
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        down = await http.post("/gateway/charge", json=body("db2", {"token": token}), headers=auth)
    assert (down.status_code, down.json()["error"]) == (503, "service_unavailable")
    assert await remaining(pool, token) == 7


@pytest.fixture
async def world() -> AsyncIterator[World]:
    node: Anvil = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield await make_world(node)
    finally:
        await node.close()


async def test_an_x402_payment_of_the_routes_price_is_charged_once(
    world: World, pool: db.Pool, tmp_path: Path
) -> None:
    app = create_app(world.settings, pool, gateway=gateway(tmp_path, world.settings, NO_TIERS_TOML))
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        auth = await key_for(pool, [FORECAST])
        asked = await http.post("/gateway/charge", json=body("x0", None), headers=auth)
        assert asked.status_code == 402
        relayed = asked.json()["payer_headers"]
        assert relayed["PAYMENT-REQUIRED"] == asked.headers["PAYMENT-REQUIRED"]
        assert {a["amount"] for a in decode_header(relayed["PAYMENT-REQUIRED"])["accepts"]} == {
            str(3 * PRICE)
        }
        required = PaymentRequired.model_validate(
            decode_header(asked.json()["payer_headers"]["PAYMENT-REQUIRED"])
        )
        client = paying_client(world.payer, world.token.address, 3 * PRICE)
        payload = await client.create_payment_payload(required)
        (header,) = x402HTTPClient(client).encode_payment_signature_header(payload).values()
        x402 = {"x402": header, "version": 2}
        paid = await http.post("/gateway/charge", json=body("x1", x402), headers=auth)
        again = await http.post("/gateway/charge", json=body("x1", x402), headers=auth)
        reused = await http.post("/gateway/charge", json=body("x2", x402), headers=auth)
        refund = await http.post(f"/gateway/charge/{paid.json()['charge_id']}/refund", headers=auth)
    assert paid.status_code == 200, paid.text
    got = paid.json()
    assert (got["rail"], got["units"], got["payer"].lower()) == (
        "x402",
        3 * PRICE,
        world.payer.address.lower(),
    )
    assert decode_header(got["payer_headers"]["PAYMENT-RESPONSE"])["success"] is True
    assert again.json() == got
    assert reused.status_code == 402 and reused.json()["charged"] is False
    assert (refund.status_code, refund.json()["error"]) == (409, "charge_not_refundable")
    assert await world.token.balance_of(world.receiver) == 3 * PRICE
    rows = await pool.fetch("SELECT amount, status FROM x402_authorizations")
    assert [(int(r["amount"]), r["status"]) for r in rows] == [(3 * PRICE, "settled")]


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    env["DATABASE_URL"] = database_url
    env["WATCHER_DATA_DIR"] = str(tmp_path / "data")
    (tmp_path / "gateway.toml").write_text(NO_TIERS_TOML)
    env["WATCHER_GATEWAY_CONFIG"] = str(tmp_path / "gateway.toml")
    env["WATCHER_OPERATOR"] = "ops@example.com"
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", "service-key", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_creates_lists_and_revokes_keys(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    env = _env(tmp_path, database_url)
    made = await asyncio.to_thread(cli, env, "create", "--name", "queue", "--routes", FORECAST)
    assert made.returncode == 0, made.stderr
    key = next(w for w in made.stdout.split() if w.startswith(service_keys.PREFIX))
    row = await pool.fetchrow("SELECT id, key_hash, routes, all_routes FROM service_keys")
    assert bytes(row["key_hash"]) == keys.sha256(key)
    assert (row["routes"], row["all_routes"]) == ([FORECAST], False)
    stored = await pool.fetchval("SELECT row_to_json(s)::text FROM service_keys s")
    assert key not in stored  # only the hash
    bad = await asyncio.to_thread(cli, env, "create", "--name", "x", "--routes", "GET /nope")
    assert bad.returncode == 2 and "GET /nope" in bad.stderr
    listed = await asyncio.to_thread(cli, env, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (item,) = json.loads(listed.stdout)
    assert (item["name"], item["revoked_at"]) == ("queue", None) and key not in listed.stdout
    gone = await asyncio.to_thread(cli, env, "revoke", str(row["id"]), "--reason", "rotated")
    twice = await asyncio.to_thread(cli, env, "revoke", str(row["id"]), "--reason", "again")
    assert (gone.returncode, twice.returncode) == (0, 1)
    assert await pool.fetchval("SELECT revoked_reason FROM service_keys") == "rotated"
    audit = await pool.fetch("SELECT action, subject, operator, detail FROM admin_audit")
    assert [(a["action"], a["subject"], a["operator"]) for a in audit] == [
        ("service_key.create", str(row["id"]), "ops@example.com"),
        ("service_key.revoke", str(row["id"]), "ops@example.com"),
    ]
    assert key not in json.dumps([a["detail"] for a in audit])  # never the key
    env.pop("WATCHER_OPERATOR")
    for args in (("create", "--name", "q", "--all-routes"), ("revoke", "1", "--reason", "x")):
        done = await asyncio.to_thread(cli, env, *args)
        assert done.returncode == 2 and "--operator" in done.stderr, done.stderr
        assert "WATCHER_OPERATOR" in done.stderr
    flagged = await asyncio.to_thread(
        cli, env, "create", "--name", "q", "--all-routes", "--operator", "bob"
    )
    assert flagged.returncode == 0, flagged.stderr
    assert await pool.fetchval("SELECT count(*) FROM service_keys") == 2
    assert await pool.fetchval("SELECT operator FROM admin_audit ORDER BY id DESC LIMIT 1") == "bob"


async def test_the_admin_api_creates_lists_and_revokes_keys(
    server: httpx.AsyncClient, pool: db.Pool
) -> None:
    admin = api_support.ADMIN_HEADERS
    base = "/x402/admin/service-keys"
    nobody = await server.post(base, json={"name": "q", "all_routes": True})
    unknown = await server.post(base, json={"name": "q", "routes": ["GET /nope"]}, headers=admin)
    both = await server.post(
        base, json={"name": "q", "routes": [FORECAST], "all_routes": True}, headers=admin
    )
    made = await server.post(base, json={"name": "q", "routes": [HEALTH]}, headers=admin)
    assert (nobody.status_code, unknown.status_code, both.status_code) == (403, 422, 422)
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    auth = {"Authorization": f"Bearer {key}"}
    served = await server.post("/gateway/charge", json=body("a1", None, HEALTH), headers=auth)
    assert served.status_code == 200
    (listed,) = (await server.get(base, headers=admin)).json()["service_keys"]
    assert (listed["routes"], listed["revoked_at"]) == ([HEALTH], None)
    assert key not in json.dumps(listed) and listed["last_used_at"] is not None
    gone = await server.post(
        f"{base}/{made.json()['id']}/revoke", json={"reason": "x"}, headers=admin
    )
    twice = await server.post(
        f"{base}/{made.json()['id']}/revoke", json={"reason": "y"}, headers=admin
    )
    assert (gone.status_code, twice.status_code) == (200, 404)
    after = await server.post("/gateway/charge", json=body("a2", None, HEALTH), headers=auth)
    assert (after.status_code, after.json()["error"]) == (403, "service_key_revoked")
