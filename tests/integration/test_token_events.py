"""token.used_up: written by the metering statement itself when a call takes the last unit."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi.responses import JSONResponse

from api import paywall
from api.gate import token_hash
from devkit.api_support import app_for, buy_token, client
from watcher import db, events

PAID = "/x402/example/paid"


async def _used_up(pool: db.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT resource_id, data FROM events WHERE type = 'token.used_up' ORDER BY id"
    )
    return [{"id": r["resource_id"], **json.loads(r["data"])} for r in rows]


async def _token_json(pool: db.Pool, token_id: int) -> dict[str, Any]:
    """What events.tokens writes for the token now (written and rolled back)."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await events.tokens(conn, "token.issued", [token_id])
            data = await conn.fetchval("SELECT data FROM events ORDER BY id DESC LIMIT 1")
        finally:
            await tx.rollback()
    parsed: dict[str, Any] = json.loads(data)
    return parsed


async def test_the_last_call_writes_one_used_up_with_the_token_as_it_is(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        bought = await buy_token(http, pool, amount=1_000_000)
        headers = {"x-payment-token": bought["token"]}
        codes = [
            r.status_code
            for r in await asyncio.gather(*(http.get(PAID, headers=headers) for _ in range(40)))
        ]
        assert codes.count(200) == 10
        # The nine calls before it wrote nothing; refused calls write nothing either.
        used = await _used_up(pool)
        assert len(used) == 1 and used[0]["id"] == str(bought["token_id"])
        assert used[0]["remaining"] == 0 and used[0]["requests_total"] == 10
        assert used[0] == await _token_json(pool, bought["token_id"])
        assert (await http.get(PAID, headers=headers)).status_code == 402
    assert len(await _used_up(pool)) == 1


async def test_a_rolled_back_charge_leaves_neither_the_charge_nor_the_event(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        bought = await buy_token(http, pool, amount=100_000)  # one call
    digest = token_hash(bought["token"])
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        row = await conn.fetchrow(db.q("api_meter"), digest, 1, PAID)
        assert row["remaining"] == 0 and row["used_up_events"] == 1
        assert await conn.fetchval("SELECT count(*) FROM events WHERE type = 'token.used_up'") == 1
        await tx.rollback()
    assert await _used_up(pool) == []
    remaining = await pool.fetchval(
        "SELECT remaining FROM access_tokens WHERE id = $1", bought["token_id"]
    )
    assert remaining == 1


async def test_an_endpoint_wanting_the_type_gets_a_delivery_in_the_same_statement(
    pool: db.Pool,
) -> None:
    endpoint = await pool.fetchval(
        "INSERT INTO webhook_endpoints (url, event_types, secret)"
        " VALUES ('https://example.test/hook', ARRAY['token.used_up'],"
        " 'whsec_' || repeat('A', 32)) RETURNING id"
    )
    async with client(app_for(pool)) as http:
        bought = await buy_token(http, pool, amount=200_000)  # two calls
        headers = {"x-payment-token": bought["token"]}
        assert (await http.get(PAID, headers=headers)).json()["remaining"] == 1
        assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        assert (await http.get(PAID, headers=headers)).json()["remaining"] == 0
    rows = await pool.fetch(
        "SELECT e.type FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
        " WHERE d.endpoint_id = $1",
        endpoint,
    )
    assert [r["type"] for r in rows] == ["token.used_up"]


async def test_keyed_calls_write_it_once_and_a_replay_writes_nothing(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        bought = await buy_token(http, pool, amount=200_000)
        token = bought["token"]
        for key in ("a", "b"):
            headers = {"x-payment-token": token, "Idempotency-Key": key}
            assert (await http.get(PAID, headers=headers)).status_code == 200
        assert len(await _used_up(pool)) == 1
        again = await http.get(PAID, headers={"x-payment-token": token, "Idempotency-Key": "b"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        twins = {"x-payment-token": token, "Idempotency-Key": "c"}
        raced = await asyncio.gather(*(http.get(PAID, headers=twins) for _ in range(4)))
        assert {r.status_code for r in raced} <= {402, 409}
    used = await _used_up(pool)
    assert len(used) == 1 and used[0]["remaining"] == 0


async def test_a_refund_gives_the_unit_back_and_the_next_last_call_writes_it_again(
    pool: db.Pool,
) -> None:
    app = app_for(pool)

    @app.get("/broken/answers-503")
    async def answers_503(charge: Annotated[paywall.Charge, paywall.paid()]) -> JSONResponse:
        return JSONResponse({"error": "upstream down"}, status_code=503)

    async with client(app) as http:
        bought = await buy_token(http, pool, amount=100_000)  # one call
        headers = {"x-payment-token": bought["token"]}
        assert (await http.get("/broken/answers-503", headers=headers)).status_code == 503
        # The charge took the last unit (its event committed with it); the refund gave
        # it back without an event of its own.
        assert [u["remaining"] for u in await _used_up(pool)] == [0]
        me = (await http.get("/x402/tokens/me", headers=headers)).json()
        assert me["remaining"] == 1
        assert (await http.get(PAID, headers=headers)).status_code == 200
    assert [u["remaining"] for u in await _used_up(pool)] == [0, 0]
