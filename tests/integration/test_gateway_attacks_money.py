"""An attacker's requests against reverse-proxy mode that aim at money: under-charges,
double serving on one payment, concurrent spending of one token, idempotency keys
replayed across tokens and routes, x402 payments reused; real HTTP, real upstream,
real PostgreSQL and anvil. Each asserts the safe behaviour (fails while a hole is open)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from api import gate
from api.app import create_app
from devkit import upstream as upstream_kit
from devkit.anvil import start_anvil
from devkit.api_support import buy_token, serve
from devkit.x402kit import BASE_CHAIN_ID, World, make_world, v1_header, v2_header
from tests.integration.test_gateway_attacks import get, gw, gw_url, load, raw, up
from watcher import db

__all__ = ["gw", "gw_url", "up"]  # the fixtures, shared with the other attacks


async def remaining(pool: db.Pool, token: str) -> int:
    value: int = await pool.fetchval(
        "SELECT remaining FROM access_tokens WHERE token_hash = $1", gate.token_hash(token)
    )
    return value


async def spend(gw: httpx.AsyncClient, token: str, calls: int) -> None:
    for _ in range(calls):
        resp = await gw.get("/v1/one", headers={"x-payment-token": token})
        assert resp.status_code == 200, resp.text


async def test_a_route_costing_three_calls_refuses_a_token_holding_two(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    await spend(gw, token, 8)
    resp = await gw.get("/v1/paid/x", headers={"x-payment-token": token})
    assert (resp.status_code, resp.json()["error"]) == (402, "token_exhausted")
    assert await remaining(pool, token) == 2
    assert up.accepted == 8


async def test_twenty_calls_at_once_on_a_ten_call_token_serve_exactly_ten(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    h = {"x-payment-token": token}
    answers = await asyncio.gather(*(gw.get("/v1/one", headers=h) for _ in range(20)))
    assert sorted(a.status_code for a in answers) == [200] * 10 + [402] * 10
    assert up.accepted == 10 and await remaining(pool, token) == 0
    keyed = await buy_token(gw, pool)
    answers = await asyncio.gather(
        *(
            gw.get(
                "/v1/paid/x",
                headers={"x-payment-token": keyed["token"], "Idempotency-Key": f"k{i}"},
            )
            for i in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] * 3 + [402] * 3
    assert up.accepted == 13 and await remaining(pool, keyed["token"]) == 1


async def test_an_idempotency_key_never_replays_across_tokens_or_routes(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    a, b = (await buy_token(gw, pool))["token"], (await buy_token(gw, pool))["token"]
    first = await gw.get("/v1/one", headers={"x-payment-token": a, "Idempotency-Key": "k"})
    other = await gw.get("/v1/one", headers={"x-payment-token": b, "Idempotency-Key": "k"})
    assert first.status_code == 200 and other.status_code == 200
    assert "Idempotent-Replayed" not in other.headers  # b pays for its own answer
    assert other.headers["X-Payment-Charge-Id"] != first.headers["X-Payment-Charge-Id"]
    assert (await remaining(pool, a), await remaining(pool, b)) == (9, 9)
    cross = await gw.get("/v1/paid/x", headers={"x-payment-token": a, "Idempotency-Key": "k"})
    assert cross.status_code == 422 and "Idempotent-Replayed" not in cross.headers
    same = await asyncio.gather(
        *(
            gw.get("/v1/one", headers={"x-payment-token": a, "Idempotency-Key": "z"})
            for _ in range(5)
        )
    )
    assert all(s.status_code in (200, 409) for s in same), [s.status_code for s in same]
    assert up.accepted == 3 and await remaining(pool, a) == 8


async def test_an_upload_over_the_limit_is_never_forwarded_whole(
    gw_url: str, gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]

    async def pieces(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"z" * 400

    small = await gw.post("/v1/small", content=pieces(1), headers={"x-payment-token": token})
    assert (small.status_code, small.json()["error"]) == (413, "body_too_large")
    assert await remaining(pool, token) == 10  # refused before the charge
    streamed = await gw.post("/v1/up/big", content=pieces(5), headers={"x-payment-token": token})
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"] == "body_too_large"
    assert up.uploads.get("big", 0) <= 1000
    chunk = b"%x\r\n%s\r\n" % (150, b"c" * 150)
    request = (
        get(
            b"/v1/small",
            b"Transfer-Encoding: chunked",
            b"x-payment-token: " + token.encode(),
            method=b"POST",
        )
        + chunk
        + b"0\r\n\r\n"
    )
    status, _ = await raw(gw_url, request)
    assert status == 413
    # The streamed one was relayed and cut off (the upstream sees the client go away, so
    # it never completes; on a loaded machine the cut can come before its handler ran at
    # all); the chunked one never reached it; only the streamed one is charged.
    assert up.accepted <= 1 and "bytes" not in streamed.json()
    assert await remaining(pool, token) == 9


async def x402_gateway(
    up: upstream_kit.Upstream, pool: db.Pool, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        world = await make_world(node)
        app = create_app(world.settings, pool, gateway=load(tmp_path, up.url, world.settings))
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
            yield http, world
    finally:
        await node.close()


async def test_an_x402_payment_is_never_reused_on_a_dearer_route_nor_twice(
    up: upstream_kit.Upstream, pool: db.Pool, tmp_path: Path
) -> None:
    async for http, world in x402_gateway(up, pool, tmp_path):
        start = await world.token.balance_of(world.receiver)
        cheap = await v2_header(http, world, route="/v1/one", cap_units=300_000)
        dear = await http.get("/v1/paid/x", headers=cheap)
        assert dear.status_code == 402, dear.text
        under = await v2_header(http, world, route="/v1/paid/x", cap_units=300_000, amount="100000")
        lied = await http.get("/v1/paid/x", headers=under)
        assert lied.status_code in (400, 402), lied.text
        once = await http.get("/v1/one", headers=cheap)
        twice = await http.get("/v1/one", headers=cheap)
        assert once.status_code == 200, once.text
        assert twice.status_code in (400, 402, 409), twice.text
        v1 = await v1_header(http, world, route="/v1/one", cap_units=300_000)
        odd = await http.get("/v1/odd", headers=v1)
        assert odd.status_code in (400, 402), odd.text
        paid = await world.token.balance_of(world.receiver) - start
        assert paid == 100_000 and up.accepted == 1


async def test_a_keyed_retry_of_a_streamed_answer_never_calls_the_upstream_unpaid(
    gw: httpx.AsyncClient, up: upstream_kit.Upstream, pool: db.Pool
) -> None:
    token = (await buy_token(gw, pool))["token"]
    h = {"x-payment-token": token, "Idempotency-Key": "streamed-1"}
    first = await gw.get("/v1/stream?n=3&delay_ms=10", headers=h)
    assert first.status_code == 200
    retries = [await gw.get("/v1/stream?n=3&delay_ms=10", headers=h) for _ in range(3)]
    calls_paid = 10 - await remaining(pool, token)
    assert up.accepted <= calls_paid, ([r.status_code for r in retries], up.accepted, calls_paid)
