"""Forward-auth mode through real proxies: nginx, Caddy and Traefik run the recipes of
docs/gateway.md ("Forward-auth mode") as written, with only the placeholders filled in,
in front of the devkit upstream, asking a real watcher API (uvicorn, PostgreSQL)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from devkit import api_support, proxies, upstream
from devkit import stripe_helpers as sh
from devkit.anvil import Anvil, free_port, start_anvil
from devkit.x402kit import BASE_CHAIN_ID, PRICE, decode_header, make_world, v1_header, v2_header
from watcher import db, gateway_config
from watcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "gateway.md"
SECRET = "fwdauth-test-secret-0123456789abcdef"
PROXIES = ["nginx", "caddy", "traefik"]
# A 3-call route for pro subscribers, a 1-call route for team only, and the rest free.
GATEWAY = """
[upstreams.api]
url = "{url}"

[[routes]]
method = ["GET", "POST"]
path = "/echo/{{rest:path}}"
upstream = "api"
price_usd = "0.30"
tiers = ["pro"]

[[routes]]
method = "GET"
path = "/echo/team/{{rest:path}}"
upstream = "api"
price_usd = "0.10"
tiers = ["team"]

[[routes]]
method = "GET"
path = "/slow"
upstream = "api"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/fail"
upstream = "api"
price_usd = "0.10"
"""


def recipe(name: str) -> str:
    """The fenced block after ``<!-- recipe: name -->`` in docs/gateway.md."""
    text = DOC.read_text()
    found = re.search(rf"<!-- recipe: {name} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert found, f"no {name} recipe in {DOC}"
    return found.group(1)


@dataclass
class Stack:
    proxy: proxies.Proxy
    up: upstream.Upstream
    watcher: str  # the watcher's URL (the payer never needs it)
    http: httpx.AsyncClient  # to the proxy


BASE_VALUES: dict[str, Any] = {
    "stripe_secret_key": "sk_test_local",
    "stripe_webhook_secret": sh.WEBHOOK_SECRET,
    "stripe_price_id_pro": sh.PRICES["pro"],
    "stripe_price_id_team": sh.PRICES["team"],
    "stripe_price_id_enterprise": sh.PRICES["enterprise"],
    "watcher_trusted_proxies": "127.0.0.1",
    "watcher_gateway_secret": SECRET,
}


def settings_for(**over: Any) -> Settings:
    return api_support.make_settings(**{**BASE_VALUES, **over})


@contextlib.asynccontextmanager
async def run_proxy(
    kind: str, watcher: str, upstream_url: str, timeout: int = 30
) -> AsyncIterator[proxies.Proxy]:
    values = {
        "WATCHER": watcher,
        "WATCHER_HOST": watcher.removeprefix("http://"),
        "UPSTREAM": upstream_url,
        "UPSTREAM_HOST": upstream_url.removeprefix("http://"),
        "UPSTREAM_TIMEOUT": f"{timeout}s",
    }
    runner = {"nginx": proxies.nginx, "caddy": proxies.caddy, "traefik": proxies.traefik}
    async with runner[kind](recipe(kind), values=values) as proxy:
        yield proxy


@contextlib.asynccontextmanager
async def stack(
    kind: str,
    pool: db.Pool,
    tmp_path: Path,
    settings: Settings,
    *,
    upstream_url: str = "",
    timeout: int = 30,
) -> AsyncIterator[Stack]:
    async with upstream.upstream(SECRET.encode()) as up:
        target = upstream_url or up.url
        path = tmp_path / "gateway.toml"
        path.write_text(GATEWAY.format(url=up.url))
        config = gateway_config.load(path, settings)
        app = create_app(settings, pool, gateway=config)
        async with (
            api_support.serve(app) as watcher,
            run_proxy(kind, watcher, target, timeout) as proxy,
            httpx.AsyncClient(base_url=proxy.url, timeout=30) as http,
        ):
            yield Stack(proxy, up, watcher, http)


@pytest.fixture(params=PROXIES)
async def st(request: pytest.FixtureRequest, pool: db.Pool, tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack(request.param, pool, tmp_path, settings_for()) as s:
        yield s


async def subscribe(s: Stack, pool: db.Pool, tier: str, n: int) -> str:
    """A subscriber key of ``tier`` through the watcher's own Stripe routes."""
    async with httpx.AsyncClient(base_url=s.watcher, timeout=30) as w:
        return await sh.subscriber_key(
            w, pool, tier, customer=f"cus_Fwd{tier}{n}", sub_id=f"sub_Fwd{tier}{n}"
        )


async def token_for(s: Stack, pool: db.Pool) -> str:
    """$1 = 10 calls, bought through the proxy's /x402/ routes."""
    body = await api_support.buy_token(s.http, pool)
    token: str = body["token"]
    return token


def seen_by_upstream(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 200, resp.text
    headers: dict[str, str] = resp.json()["headers"]
    return headers


async def test_unpaid_call_gets_the_routes_402(st: Stack) -> None:
    r = await st.http.get("/echo/paris?days=3")
    assert r.status_code == 402, r.text
    body = r.json()
    assert body["x402Version"] == 1 and body["error"] == "payment_required"
    assert body["price_usd"] == "0.30" and body["calls"] == 3
    (v1,) = [a for a in body["accepts"] if a["network"] == "base"]
    assert v1["maxAmountRequired"] == str(3 * PRICE)
    assert v1["resource"] == f"{st.proxy.url}/echo/paris?days=3"
    assert body["invoice"]["url"] == f"{st.proxy.url}/x402/invoices"
    assert r.headers["cache-control"] == "no-store"
    assert st.up.accepted == 0
    missing = await st.http.get("/nothing/here")
    assert missing.status_code == 404 and missing.json()["error"] == "no_route"


async def test_a_token_pays_the_exact_cost_and_the_upstream_checks_it(
    st: Stack, pool: db.Pool
) -> None:
    token = await token_for(st, pool)
    forged = {"X-Payment-Charge-Id": "tok_999999", "X-Payment-Rail": "x", "X-Payment-Tier": "pro"}
    first = await st.http.get("/echo/paris?days=3", headers={"x-payment-token": token, **forged})
    got = seen_by_upstream(first)
    names = [k for k, _ in first.json()["raw_headers"]]
    assert names.count("x-payment-charge-id") == names.count("x-payment-rail") == 1
    assert got["x-payment-charge-id"] != "tok_999999"
    assert "x-payment-tier" not in got, got.get("x-payment-tier")
    assert got["x-payment-rail"] == "token"
    assert got["x-payment-remaining"] == "7"  # 10 - 3
    assert got["x-payment-charge-id"].startswith("tok_")
    assert got["x-payment-body-sha256"] == "UNSIGNED-PAYLOAD"
    assert got["x-payment-signature"].startswith("v1=")
    assert "x-payment-token" not in got and token not in str(first.json())
    second = await st.http.get("/echo/paris", headers={"x-payment-token": token})
    assert seen_by_upstream(second)["x-payment-remaining"] == "4"
    assert st.up.accepted == 2 and st.up.refused == []
    keyed = await st.http.get(
        "/echo/x", headers={"x-payment-token": token, "Idempotency-Key": "k1"}
    )
    assert keyed.status_code == 400, keyed.text
    assert keyed.json()["error"] == "idempotency_not_supported"
    remaining = await pool.fetchval("SELECT remaining FROM access_tokens")
    assert remaining == 4


async def test_a_subscriber_key_of_an_allowed_tier_passes(st: Stack, pool: db.Pool) -> None:
    pro = await subscribe(st, pool, "pro", 1)
    auth = {"Authorization": f"Bearer {pro}"}
    passed = await st.http.get("/echo/lyon", headers=auth)
    got = seen_by_upstream(passed)
    assert got["x-payment-rail"] == "subscription" and got["x-payment-tier"] == "pro"
    assert "authorization" not in got and pro not in str(passed.json())
    refused = await st.http.get("/echo/team/lyon", headers=auth)  # team only
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"].startswith("subscription_")
    other = await st.http.get("/echo/plain", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert other.status_code == 402  # a non-key Authorization is no payment
    assert st.up.accepted == 1


async def test_a_non_payment_authorization_reaches_the_upstream(st: Stack, pool: db.Pool) -> None:
    token = await token_for(st, pool)
    r = await st.http.get(
        "/echo/a", headers={"x-payment-token": token, "Authorization": "Basic dXNlcjpwdw=="}
    )
    assert seen_by_upstream(r)["authorization"] == "Basic dXNlcjpwdw=="


async def test_bypassing_the_proxy_is_refused_by_the_upstream(
    st: Stack, pool: db.Pool, tmp_path: Path
) -> None:
    async with httpx.AsyncClient() as direct_http:
        direct = await direct_http.get(f"{st.up.url}/echo/paris")
    assert direct.status_code == 401
    # The watcher's endpoint asked by an untrusted peer: refused before anything is read.
    app_settings = settings_for(watcher_trusted_proxies="10.0.0.0/8")
    path = tmp_path / "g.toml"
    path.write_text(GATEWAY.format(url=st.up.url))
    app = create_app(app_settings, pool, gateway=gateway_config.load(path, app_settings))
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as w:
        r = await w.get(
            "/gateway/authorize",
            headers={"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/echo/a"},
        )
    assert r.status_code == 403 and r.json()["error"] == "forward_auth_untrusted_peer"


@pytest.fixture
async def node() -> AsyncIterator[Anvil]:
    n = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield n
    finally:
        await n.close()


@pytest.mark.parametrize("kind", PROXIES)
async def test_an_x402_payment_of_the_routes_price_passes_once(
    kind: str, node: Anvil, pool: db.Pool, tmp_path: Path
) -> None:
    world = await make_world(node, **BASE_VALUES)
    async with stack(kind, pool, tmp_path, world.settings) as s:
        unpaid = await s.http.get("/echo/x402")
        assert unpaid.status_code == 402
        (v2,) = decode_header(unpaid.headers["PAYMENT-REQUIRED"])["accepts"]
        assert v2["amount"] == str(3 * PRICE)
        paid = await v2_header(s.http, world, route="/echo/x402", cap_units=3 * PRICE)
        first = await s.http.get("/echo/x402", headers=paid)
        again = await s.http.get("/echo/x402", headers=paid)
        v1 = await v1_header(s.http, world, route="/echo/v1", cap_units=3 * PRICE)
        paid_v1 = await s.http.get("/echo/v1", headers=v1)
    got = seen_by_upstream(first)
    assert got["x-payment-rail"] == "x402"
    assert got["x-payment-payer"].lower() == world.payer.address.lower()
    assert "payment-signature" not in got
    if kind == "nginx":  # the others cannot add an auth header to the payer's answer
        assert decode_header(first.headers["PAYMENT-RESPONSE"])["success"] is True
    assert again.status_code == 402
    got_v1 = seen_by_upstream(paid_v1)
    assert got_v1["x-payment-rail"] == "x402" and "x-payment" not in got_v1
    if kind == "nginx":
        assert decode_header(paid_v1.headers["X-PAYMENT-RESPONSE"])["success"] is True
    assert await world.token.balance_of(world.receiver) == 6 * PRICE
    assert s.up.accepted == 2


@pytest.mark.parametrize("kind", PROXIES)
async def test_upstream_down_or_slow_the_charge_stands(
    kind: str, pool: db.Pool, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with stack(kind, pool, tmp_path, settings_for(), upstream_url=dead) as s:
        token = await token_for(s, pool)
        down = await s.http.get("/echo/a", headers={"x-payment-token": token})
    assert down.status_code == 502
    (tmp_path / "slow").mkdir()
    async with stack(kind, pool, tmp_path / "slow", settings_for(), timeout=1) as s:
        token2 = await token_for(s, pool)
        slow = await s.http.get("/slow?seconds=4", headers={"x-payment-token": token2})
        failed = await s.http.get("/fail", headers={"x-payment-token": token2})
    assert slow.status_code == 504
    assert failed.status_code == 500
    rows = await pool.fetch("SELECT remaining FROM access_tokens ORDER BY id")
    assert [r["remaining"] for r in rows] == [7, 8]  # no refund in this mode


async def test_envoy_style_the_path_after_the_prefix(pool: db.Pool, tmp_path: Path) -> None:
    """Envoy's ext_authz sends the payer's method and ``path_prefix`` + the original path;
    no proxy here (Envoy is not installable), the check request is made as Envoy makes it."""
    settings = settings_for()
    async with upstream.upstream(SECRET.encode()) as up:
        path = tmp_path / "gateway.toml"
        path.write_text(GATEWAY.format(url=up.url))
        app = create_app(settings, pool, gateway=gateway_config.load(path, settings))
        async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as w:
            token = (await api_support.buy_token(w, pool))["token"]
            unpaid = await w.post("/gateway/authorize/echo/a%20b?x=1")
            paid = await w.post(
                "/gateway/authorize/echo/a%20b?x=1", headers={"x-payment-token": token}
            )
            signed = {k: v for k, v in paid.headers.items() if k.startswith("x-payment-")}
            as_get = await w.get(f"{up.url}/echo/a%20b?x=1", headers=signed)  # signed for POST
            forwarded = await w.post(f"{up.url}/echo/a%20b?x=1", headers=signed)
            nothing = await w.get("/gateway/authorize")
    assert unpaid.status_code == 402 and unpaid.json()["calls"] == 3
    assert unpaid.json()["accepts"][0]["resource"] == f"{url}/echo/a%20b?x=1"
    assert paid.status_code == 200, paid.text
    assert signed["x-payment-remaining"] == "7"
    assert as_get.status_code == 401 and up.refused == ["bad signature"]
    assert forwarded.status_code == 200, forwarded.text
    assert forwarded.json()["method"] == "POST"
    assert nothing.status_code == 400 and nothing.json()["error"] == "forward_auth_no_original"
