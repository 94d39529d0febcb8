"""WATCHER_PUBLIC_URL through real HTTP (uvicorn, PostgreSQL), with a spoofed Host header.

Set, every absolute URL the API hands out (the 402's resource and invoice URL, the v2
header's resource, the gateway's and the charge endpoint's offers, forward-auth's invoice
URL) starts with it, whatever Host the request carries. Unset, they are built from the
request, which is what the Host-header test shows, and production logs a warning once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import structlog

from api import public_url
from api.app import create_app
from devkit import api_support, cli_env
from devkit.x402kit import decode_header
from watcher import db, gateway_config, service_keys
from watcher.settings import Settings

PAID = "/x402/example/paid"
PUBLIC = "https://api.example.com/pay"
EVIL = {"Host": "evil.example"}
X402 = {"x402_relayer_private_key": "0x" + "11" * 32, "x402_base_rpc_url": "http://127.0.0.1:9"}
GATEWAY_TOML = """
[upstreams.weather]
url = "http://127.0.0.1:9"

[[routes]]
method = "GET"
path = "/v1/forecast/{city}"
upstream = "weather"
price_usd = "0.30"
"""


def _settings(**over: Any) -> Settings:
    return api_support.make_settings(**X402, **over)


def _urls(resp: httpx.Response) -> tuple[str, str, str]:
    """(v1 resource, invoice URL, v2 header resource) of a 402."""
    assert resp.status_code == 402, resp.text
    body = resp.json()
    (base,) = [a for a in body["accepts"] if a["network"] == "base"]
    v2 = decode_header(resp.headers["payment-required"])
    return base["resource"], body["invoice"]["url"], v2["resource"]["url"]


async def test_the_402_is_built_from_the_public_url_whatever_the_host(pool: db.Pool) -> None:
    app = create_app(_settings(watcher_public_url=PUBLIC + "/"), pool)
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.get(PAID + "?city=oslo", headers=EVIL)
        assert _urls(resp) == (
            f"{PUBLIC}{PAID}?city=oslo",
            f"{PUBLIC}/x402/invoices",
            f"{PUBLIC}{PAID}?city=oslo",
        )
        assert "evil" not in resp.text and "evil" not in json.dumps(dict(resp.headers))
        assert "127.0.0.1" not in resp.text  # nor the socket's address
        # The invoice URL it gives is where our invoices are (the proxy strips /pay).
        path = resp.json()["invoice"]["url"].removeprefix(PUBLIC)
        made = await http.post(path, json={"chain": "base", "requests": 10})
        assert made.status_code == 201, made.text


async def test_unset_the_request_host_is_used_as_before(pool: db.Pool) -> None:
    """Development's behaviour, and why production wants the variable: the URLs follow
    whatever Host the client sent."""
    app = create_app(_settings(), pool)
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.get(PAID, headers=EVIL)
        assert _urls(resp) == (
            f"http://evil.example{PAID}",
            "http://evil.example/x402/invoices",
            f"http://evil.example{PAID}",
        )
        port = url.rsplit(":", 1)[1]
        plain = _urls(await http.get(PAID))
        assert plain[0] == f"http://127.0.0.1:{port}{PAID}"


async def test_production_without_it_warns_once_naming_the_variable(pool: db.Pool) -> None:
    public_url._warned.clear()  # once per process: this test starts the count afresh
    app = create_app(_settings(watcher_env="production"), pool)
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                assert (await http.get(PAID, headers=EVIL)).status_code == 402
    warned = [e for e in logs if e["event"] == "public_url_unset"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert warned[0]["host"] == "evil.example" and "WATCHER_PUBLIC_URL" in warned[0]["fix"]
    # Set, nothing is said.
    app = create_app(_settings(watcher_env="production", watcher_public_url=PUBLIC), pool)
    public_url._warned.clear()
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        with structlog.testing.capture_logs() as logs:
            assert (await http.get(PAID, headers=EVIL)).status_code == 402
    assert not [e for e in logs if e["event"] == "public_url_unset"]


async def test_the_gateway_its_charge_endpoint_and_forward_auth_use_it(
    pool: db.Pool, tmp_path: Path
) -> None:
    settings = _settings(watcher_public_url=PUBLIC, watcher_trusted_proxies="127.0.0.1")
    (tmp_path / "gateway.toml").write_text(GATEWAY_TOML)
    gateway = gateway_config.load(tmp_path / "gateway.toml", settings)
    key = (await service_keys.create(pool, "worker", None, operator="tester", client="test")).key
    app = create_app(settings, pool, gateway=gateway)
    async with api_support.serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        proxied = await http.get("/v1/forecast/oslo?days=2", headers=EVIL)
        assert _urls(proxied) == (
            f"{PUBLIC}/v1/forecast/oslo?days=2",
            f"{PUBLIC}/x402/invoices",
            f"{PUBLIC}/v1/forecast/oslo?days=2",
        )
        charged = await http.post(
            "/gateway/charge",
            json={"route": "GET /v1/forecast/{city}", "idempotency_key": "k1"},
            headers={**EVIL, "Authorization": f"Bearer {key}"},
        )
        assert charged.status_code == 402
        (base,) = [a for a in charged.json()["accepts"] if a["network"] == "base"]
        assert base["resource"] == PUBLIC + "/v1/forecast/{city}"
        assert charged.json()["invoice"]["url"] == f"{PUBLIC}/x402/invoices"
        # Forward-auth: the resource is the merchant's, as the trusted proxy names it; the
        # invoice is ours, at the public URL.
        asked = await http.get(
            "/gateway/authorize",
            headers={
                **EVIL,
                "X-Original-Method": "GET",
                "X-Original-URI": "/v1/forecast/oslo",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "shop.example",
            },
        )
        assert asked.status_code == 402, asked.text
        (base,) = [a for a in asked.json()["accepts"] if a["network"] == "base"]
        assert base["resource"] == "https://shop.example/v1/forecast/oslo"
        assert asked.json()["invoice"]["url"] == f"{PUBLIC}/x402/invoices"
        assert "evil" not in asked.text


def test_a_bad_public_url_stops_the_command_with_exit_2_naming_it(tmp_path: Path) -> None:
    env = cli_env.process_env(tmp_path)
    for value, why in (("api.example.com/pay", "not an absolute"), (PUBLIC + "?a=1", "query")):
        env["WATCHER_PUBLIC_URL"] = value
        for command in ("run", "api"):
            proc = cli_env.run(tmp_path, env, command, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert f"WATCHER_PUBLIC_URL: {value!r}" in proc.stderr and why in proc.stderr
            assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()
