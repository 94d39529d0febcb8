"""An attacker's requests against reverse-proxy mode, over real HTTP to a real upstream
(devkit/upstream.py, which echoes what it received): each test asserts the safe
behaviour, so it fails while a hole is open. Free calls, forged headers, leaks,
crafted input; tests/integration/test_gateway_attacks_money.py has the charges."""

from __future__ import annotations

import asyncio
import json
import posixpath
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from devkit import proxies
from devkit import upstream as upstream_kit
from devkit.api_support import buy_token, make_settings, serve
from watcher import db, gateway_config
from watcher.settings import Settings

SECRET = b"attack-test-secret-0123456789abcdef"
UPSTREAM_KEY = "upstream-private-key-attack"
OURS = {
    "x-payment-rail",
    "x-payment-payer",
    "x-payment-charge-id",
    "x-payment-remaining",
    "x-payment-timestamp",
    "x-payment-body-sha256",
    "x-payment-signature",
    "x-payment-tier",
}


def load(tmp_path: Path, up: str, settings: Settings) -> gateway_config.GatewayConfig:
    env = {"ATTACK_GATEWAY_SECRET": SECRET.decode(), "ATTACK_UPSTREAM_KEY": UPSTREAM_KEY}
    return gateway_config.load(gateway_file(tmp_path, up), settings, env)


def gateway_file(tmp_path: Path, up: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[upstreams.api]
url = "{up}"
timeout_seconds = 3
secret = {{ env = "ATTACK_GATEWAY_SECRET" }}
[upstreams.api.headers]
X-Api-Key = {{ env = "ATTACK_UPSTREAM_KEY" }}

[[routes]]
method = "GET"
path = "/v1/paid/{{id}}"
upstream = "api"
upstream_path = "/echo/paid/{{id}}"
price_usd = "0.30"

[[routes]]
method = ["GET", "POST"]
path = "/v1/one"
upstream = "api"
upstream_path = "/echo/one"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/free/{{rest:path}}"
upstream = "api"
upstream_path = "/echo/free/{{rest}}"
free = true

[[routes]]
method = "POST"
path = "/v1/small"
upstream = "api"
upstream_path = "/echo/small"
price_usd = "0.10"
max_body_bytes = 100

[[routes]]
method = "POST"
path = "/v1/up/{{name}}"
upstream = "api"
upstream_path = "/upload/{{name}}"
price_usd = "0.10"
stream_request = true
max_body_bytes = 1000

[[routes]]
method = "GET"
path = "/v1/fail"
upstream = "api"
upstream_path = "/fail"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/stream"
upstream = "api"
upstream_path = "/stream"
price_usd = "0.10"

[[routes]]
method = "GET"
path = "/v1/odd"
upstream = "api"
upstream_path = "/echo/odd"
price_usd = "0.15"
rails = ["x402"]
"""
    )
    return path


@pytest.fixture
async def up() -> AsyncIterator[upstream_kit.Upstream]:
    async with upstream_kit.upstream(SECRET) as server:
        yield server


@pytest.fixture
async def gw_url(up: upstream_kit.Upstream, pool: db.Pool, tmp_path: Path) -> AsyncIterator[str]:
    settings = make_settings()
    config = load(tmp_path, up.url, settings)
    async with serve(create_app(settings, pool, gateway=config)) as url:
        yield url


@pytest.fixture
async def gw(gw_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw_url, timeout=30) as http:
        yield http


async def raw(url: str, request: bytes) -> tuple[int, bytes]:
    """One request sent byte for byte (no client normalising it); the status and body."""
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 15)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(path: bytes, *extra: bytes, method: bytes = b"GET") -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    return b"\r\n".join([*lines, *extra, b"", b""])


def upstream_saw(body: bytes) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads(body)
    return seen


def decoded_path(raw_path: str) -> str:
    """The path as an upstream that decodes and normalises it would route it (nginx, Go)."""
    plain = urllib.parse.unquote(raw_path).replace("\\", "/")
    return posixpath.normpath(plain)


async def test_no_encoded_slash_or_dot_walks_a_free_route_onto_a_paid_upstream_path(
    gw_url: str, up: upstream_kit.Upstream
) -> None:
    tricks = [
        b"/v1/free/..%2F..%2Fpaid%2Fx",
        b"/v1/free/..%2f..%2fpaid%2fx",
        b"/v1/free/%2e%2e%2F%2e%2e%2Fpaid%2Fx",
        b"/v1/free/a/..%2F..%2F..%2Fpaid%2Fx",
        b"/v1/free/..%5C..%5Cpaid%5Cx",
        b"/v1/free/%2E%2E/%2E%2E/paid/x",
        b"/v1/free/../../paid/x",
        b"/v1/free/.%2e/.%2e/paid/x",
        b"/v1/free/%252e%252e%252fpaid",
    ]
    escaped = []
    for trick in tricks:
        status, body = await raw(gw_url, get(trick))
        if status == 200:
            where = decoded_path(upstream_saw(body)["path"])
            if not where.startswith("/echo/free/"):
                escaped.append((trick, where))
        else:
            assert 400 <= status < 500 and json.loads(body)["error"], (trick, status, body)
    assert escaped == []


NGINX_UPSTREAM = """
server {
    listen 127.0.0.1:@PORT@;
    location /echo/free/ { return 200 "free $uri"; }
    location /echo/paid/ { return 200 "PAID $uri"; }
    location / { return 200 "other $uri"; }
}
"""


async def test_an_upstream_that_normalises_paths_never_serves_a_paid_path_on_a_free_route(
    pool: db.Pool, tmp_path: Path
) -> None:
    # A real nginx as the merchant's upstream: it decodes %2F and resolves dot segments.
    settings = make_settings()
    async with proxies.nginx(NGINX_UPSTREAM) as ng:
        config = load(tmp_path, ng.url, settings)
        async with serve(create_app(settings, pool, gateway=config)) as url:
            status, body = await raw(url, get(b"/v1/free/..%2Fpaid%2Fx"))
    assert not (status == 200 and body.startswith(b"PAID")), body


async def test_path_method_and_case_tricks_on_a_paid_route_are_never_served_unpaid(
    gw_url: str, up: upstream_kit.Upstream
) -> None:
    tricks = [
        get(b"/v1/paid/x"),
        get(b"/v1/paid/x/"),
        get(b"/V1/paid/x"),
        get(b"/v1/PAID/x"),
        get(b"/v1//paid/x"),
        get(b"/v1/paid//x"),
        get(b"//v1/paid/x"),
        get(b"/v1/paid/x;free=1"),
        get(b"/v1;/paid/x"),
        get(b"/v1/paid/x?a=1?b=2"),
        get(b"/v1/paid%2Fx"),
        get(b"/v1/free/x/../../paid/x"),
        get(b"/v1/paid/x", method=b"HEAD"),
        get(b"/v1/paid/x", method=b"OPTIONS"),
        get(b"/v1/paid/x", method=b"get"),
        get(b"/v1/paid/x", method=b"PROPFIND"),
        get(b"http://127.0.0.1/v1/paid/x"),
        get(b"/v1/paid/\xc3\xa9"),
    ]
    served = []
    for request in tricks:
        status, _ = await raw(gw_url, request)
        if status not in (400, 402, 404, 405):
            served.append((request.split(b"\r\n")[0], status))
    assert served == []
    assert up.accepted == 0 and up.refused == []


async def test_lower_case_and_unknown_methods_get_our_json_error(gw_url: str) -> None:
    shapes = []
    for method in (b"get", b"post", b"PROPFIND"):
        status, body = await raw(gw_url, get(b"/v1/one", method=method))
        assert 400 <= status < 500, (method, status)
        shapes.append((method, status, body[:40]))
    assert all(b'"error"' in b for _, _, b in shapes), shapes


async def test_no_client_copy_of_our_headers_reaches_the_upstream_in_any_spelling(
    gw_url: str, up: upstream_kit.Upstream
) -> None:
    forged = [
        b"X_Payment_Rail: token",
        b"x_payment_payer: token:1",
        b"X-PAYMENT-RAIL: subscription",
        b"X-Payment-Charge-Id: tok_1",
        b"x-payment-charge-id: tok_2",
        b"X-Payment-Tier: enterprise",
        b"Connection: close, X-Payment-Remaining",
        b"X-Payment-Remaining: 999",
    ]
    status, body = await raw(gw_url, get(b"/v1/free/x", *forged))
    assert status == 200, body
    names = [k.lower() for k, _ in upstream_saw(body)["raw_headers"]]
    ours = [n for n in names if n.replace("_", "-").startswith("x-payment-")]
    assert sorted(ours) == sorted(set(ours)), ours  # each of ours once
    assert set(ours) <= OURS and all("_" not in n for n in ours), ours
    seen = {k.lower(): v for k, v in upstream_saw(body)["raw_headers"]}
    assert seen["x-payment-rail"] == "free" and "x-payment-tier" not in seen


async def test_a_method_override_header_never_reaches_the_upstream(
    gw_url: str, up: upstream_kit.Upstream
) -> None:
    # A GET paid (or free) as a GET must not become a DELETE at an upstream honouring these.
    overrides = [b"X-HTTP-Method-Override: DELETE", b"X-HTTP-Method: DELETE"]
    overrides += [b"X-Method-Override: DELETE", b"X-Original-URL: /echo/paid/x"]
    overrides += [b"X-Rewrite-URL: /echo/paid/x"]
    status, body = await raw(gw_url, get(b"/v1/free/x", *overrides))
    assert status in (200, 400), body
    if status == 200:
        names = {k.lower() for k, _ in upstream_saw(body)["raw_headers"]}
        assert not names & {
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
        }


async def test_the_payers_credentials_never_reach_the_upstream(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    sub_key = "wsk_" + "k" * 43
    spellings = ["Bearer " + sub_key, "bearer  " + sub_key, "Bearer\t" + sub_key, sub_key]
    leaked = []
    for auth in spellings:
        resp = await gw.get("/v1/one", headers={"x-payment-token": token, "Authorization": auth})
        assert resp.status_code == 200, resp.text
        dumped = json.dumps(resp.json())
        assert token not in dumped, auth
        if sub_key in dumped:
            leaked.append(auth)
    assert leaked == []
    assert up.refused == []


async def test_our_secrets_appear_in_no_answer_or_log_line(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool, capfd: Any
) -> None:
    token = (await buy_token(gw, pool))["token"]
    h = {"x-payment-token": token}
    answers = [
        await gw.get("/v1/fail", headers=h),
        await gw.get("/v1/paid/x"),
        await gw.get("/v1/nothing"),
        await gw.post("/v1/small", headers=h, content=b"x" * 101),
    ]
    out, err = capfd.readouterr()
    for resp in answers:  # ours, not an echo: the upstream may print its own key
        text = resp.text + json.dumps(dict(resp.headers))
        assert SECRET.decode() not in text and UPSTREAM_KEY not in text, resp.request.url
        assert "x-payment-signature" not in {k.lower() for k in resp.headers}
    assert SECRET.decode() not in out + err and UPSTREAM_KEY not in out + err
    assert token not in out + err  # nor the payer's token


async def test_smuggling_and_crafted_input_get_a_4xx_never_a_500_nor_a_free_call(
    gw_url: str, up: upstream_kit.Upstream
) -> None:
    smuggled = b"GET /v1/paid/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    te_cl = (
        get(
            b"/v1/small",
            b"Content-Length: 4",
            b"Transfer-Encoding: chunked",
            method=b"POST",
        )
        + b"0\r\n\r\n"
        + smuggled
    )
    crafted = [
        te_cl,
        get(b"/v1/one", b"Transfer-Encoding: chunked, identity", method=b"POST") + b"0\r\n\r\n",
        get(b"/v1/paid/x", b"X-A: a\rb"),
        get(b"/v1/paid/x", b"X-A: a\x00b"),
        get(b"/v1/paid/x\x00"),
        get(b"/v1/paid/%00"),
        get(b"/v1/paid/\xff\xfe"),
        get(b"/v1/paid/%ff%fe"),
        get(b"/v1/paid/x", b"X-Big: " + b"a" * 70_000),
        get(b"/v1/free/" + b"a/" * 9_999 + b"a"),
        get(b"/v1/paid/x?" + b"q=" + b"a" * 70_000),
        get(b"/v1/free/x?q=%00"),
        get(b"/v1/free/x?q=%ff%fe%0d%0aX-Injected:%20yes"),
    ]
    bad = []
    for request in crafted:
        status, body = await raw(gw_url, request)
        free = request.startswith(b"GET /v1/free/")
        if (status == 200 and not free) or status >= 500:
            bad.append((request[:60], status, body[:120]))
        if status == 200:  # a free call: nothing injected as a header of the upstream's
            assert "x-injected" not in {k.lower() for k, _ in upstream_saw(body)["raw_headers"]}
    assert bad == []
    assert up.refused == []
