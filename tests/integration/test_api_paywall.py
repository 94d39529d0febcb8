"""The paywall through real HTTP on the ASGI app and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
from fastapi.responses import JSONResponse

from api import paywall
from devkit.api_support import app_for, buy_token, client
from watcher import db

PAID = "/x402/example/paid"


def assert_payment_body(body: dict[str, object], error: str) -> None:
    assert body["x402Version"] == 1
    assert body["error"] == error
    accepts = body["accepts"]
    assert isinstance(accepts, list) and {a["network"] for a in accepts} == {
        "base",
        "ethereum",
        "solana",
    }
    base = next(a for a in accepts if a["network"] == "base")
    assert base["scheme"] == "exact" and base["maxAmountRequired"] == "100000"
    assert base["payTo"].lower() == "0x" + "ab" * 20 and base["resource"].endswith(PAID)
    assert {"description", "mimeType", "maxTimeoutSeconds", "asset"} <= set(base)
    invoice = body["invoice"]
    assert isinstance(invoice, dict) and invoice["url"].endswith("/x402/invoices")


async def test_200_concurrent_calls_on_a_10_call_token(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        token = (await buy_token(http, pool, amount=1_000_000))["token"]
        responses = await asyncio.gather(
            *(http.get(PAID, headers={"x-payment-token": token}) for _ in range(200))
        )
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 10 and codes.count(402) == 190
        for r in responses:
            if r.status_code == 402:
                assert_payment_body(r.json(), "token_exhausted")
        me = await http.get("/x402/tokens/me", headers={"x-payment-token": token})
        assert me.json()["remaining"] == 0 and me.json()["requests_total"] == 10
    assert await pool.fetchval("SELECT count(*) FROM token_usage") == 10


async def test_missing_and_unknown_tokens_get_the_payment_body(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        missing = await http.get(PAID)
        assert missing.status_code == 402
        assert_payment_body(missing.json(), "payment_required")
        unknown = await http.get(PAID, headers={"x-payment-token": "nope"})
        assert unknown.status_code == 402
        assert_payment_body(unknown.json(), "invalid_token")
        me = await http.get("/x402/tokens/me", headers={"x-payment-token": "nope"})
        assert me.status_code == 404 and me.json()["error"] == "token_unknown"


async def test_expired_token_is_refused(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        bought = await buy_token(http, pool)
        token = bought["token"]
        assert (await http.get(PAID, headers={"x-payment-token": token})).status_code == 200
        await pool.execute(
            "UPDATE access_tokens SET created_at = now() - interval '2 days',"
            " expires_at = now() - interval '1 second' WHERE id = $1",
            bought["token_id"],
        )
        refused = await http.get(PAID, headers={"x-payment-token": token})
        assert refused.status_code == 402
        assert_payment_body(refused.json(), "token_expired")
        me = (await http.get("/x402/tokens/me", headers={"x-payment-token": token})).json()
        assert me["expired"] is True and me["remaining"] == 9


async def test_idempotent_retry_replays_the_answer_and_racing_twins_pay_once(
    pool: db.Pool,
) -> None:
    async with client(app_for(pool)) as http:
        token = (await buy_token(http, pool))["token"]
        headers = {"x-payment-token": token, "Idempotency-Key": "order-42"}
        first = await http.get(PAID, headers=headers)
        again = await http.get(PAID, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
        twins = {**headers, "Idempotency-Key": "order-43"}
        raced = await asyncio.gather(*(http.get(PAID, headers=twins) for _ in range(8)))
        assert {r.status_code for r in raced} <= {200, 409}
        fresh = [
            r for r in raced if r.status_code == 200 and "idempotent-replayed" not in r.headers
        ]
        assert len(fresh) == 1
        me = (await http.get("/x402/tokens/me", headers={"x-payment-token": token})).json()
        assert me["remaining"] == 8  # two distinct keys, two calls charged
        elsewhere = await http.get("/x402/example/paid?other=1", headers=headers)
        assert elsewhere.status_code == 422  # another query string is another request


async def test_handler_failure_gives_the_unit_back(pool: db.Pool) -> None:
    app = app_for(pool)

    @app.get("/broken/raises")
    async def raises(charge: Annotated[paywall.Charge, paywall.paid()]) -> None:
        raise RuntimeError("handler bug")

    @app.get("/broken/answers-503")
    async def answers_503(charge: Annotated[paywall.Charge, paywall.paid()]) -> JSONResponse:
        return JSONResponse({"error": "upstream down"}, status_code=503)

    async with client(app) as http:
        token = (await buy_token(http, pool))["token"]
        headers = {"x-payment-token": token, "Idempotency-Key": "k1"}
        assert (await http.get("/broken/raises", headers=headers)).status_code == 500
        assert (await http.get("/broken/answers-503", headers=headers)).status_code == 503
        me = (await http.get("/x402/tokens/me", headers={"x-payment-token": token})).json()
        assert me["remaining"] == 10
        # The key was released with the refund: the retry is a real (charged) call.
        ok = await http.get(PAID, headers=headers)
        assert ok.status_code == 200 and "idempotent-replayed" not in ok.headers
        assert ok.json()["remaining"] == 9
    refunds = await pool.fetch("SELECT status_code FROM token_usage WHERE refunded ORDER BY id")
    assert [r["status_code"] for r in refunds] == [500, 503]


async def test_database_trouble_is_503_never_a_free_call(database_url: str) -> None:
    pool = await db.create_pool(database_url, min_size=2, max_size=2)
    app = app_for(pool)
    async with client(app) as http:
        token = (await buy_token(http, pool))["token"]
        headers = {"x-payment-token": token}
        # The server kills every session of the API's pool (failover, restart).
        killer = await asyncpg.connect(database_url)
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await killer.close()
        answers = [(await http.get(PAID, headers=headers)).status_code for _ in range(3)]
        assert set(answers) <= {200, 503}  # a killed session is a 503, never a 500
        me = (await http.get("/x402/tokens/me", headers=headers)).json()
        assert me["remaining"] == 10 - answers.count(200)  # every served call was charged
        await pool.close()
        resp = await http.get(PAID, headers=headers)
        assert resp.status_code == 503
        assert resp.json()["error"] == "service_unavailable" and "Retry-After" in resp.headers


def test_every_paid_route_declares_402_in_openapi(pool: db.Pool) -> None:
    spec = app_for(pool).openapi()
    paid = {
        (path, method): op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if "Idempotency-Key" in {p["name"] for p in op.get("parameters", [])}
    }
    assert set(paid) == {(PAID, "get")}  # grows as paid routes are added
    for op in paid.values():
        assert "402" in op["responses"] and "503" in op["responses"]
        assert "x-payment-token" in {p["name"] for p in op["parameters"]}


async def test_idempotency_key_is_bound_to_its_route(pool: db.Pool) -> None:
    app = app_for(pool)

    @app.get("/other/{item}")
    async def other(item: int, charge: Annotated[paywall.Charge, paywall.paid()]) -> dict[str, int]:
        return {"remaining": charge.remaining}

    async with client(app) as http:
        token = (await buy_token(http, pool))["token"]
        headers = {"x-payment-token": token, "Idempotency-Key": "once"}
        assert (await http.get(PAID, headers=headers)).status_code == 200
        reused = await http.get("/other/7", headers=headers)
        assert reused.status_code == 422 and reused.json()["error"] == "idempotency_key_reused"
        me = (await http.get("/x402/tokens/me", headers={"x-payment-token": token})).json()
        assert me["remaining"] == 9
        fresh = await http.get("/other/8", headers={**headers, "Idempotency-Key": "twice"})
        assert fresh.status_code == 200 and fresh.json()["remaining"] == 8
    endpoints = await pool.fetch("SELECT endpoint FROM token_usage ORDER BY id")
    assert [r["endpoint"] for r in endpoints] == [PAID, "/other/{item}"]  # templates, not paths
