"""Idempotency-Key over real HTTP: a retry gets the stored answer, never a second free run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from api import paywall
from devkit.api_support import ADMIN_HEADERS, app_for, buy_token, serve
from watcher import db

Paid = Annotated[paywall.Charge, paywall.paid()]


@dataclass
class Rig:
    http: httpx.AsyncClient
    pool: db.Pool
    token: str
    runs: list[str] = field(default_factory=list)  # one entry per handler run
    gate: asyncio.Event = field(default_factory=asyncio.Event)  # opened: /slow may finish
    started: asyncio.Event = field(default_factory=asyncio.Event)
    fail_next: list[bool] = field(default_factory=list)

    def headers(self, key: str) -> dict[str, str]:
        return {"x-payment-token": self.token, "Idempotency-Key": key}

    async def remaining(self) -> int:
        me = await self.http.get("/x402/tokens/me", headers={"x-payment-token": self.token})
        return int(me.json()["remaining"])


def add_routes(app: FastAPI, rig: Rig) -> None:
    @app.get("/counted/{item}")
    async def counted(item: str, charge: Paid) -> JSONResponse:
        rig.runs.append(item)
        headers = {"etag": f'"{len(rig.runs)}"', "set-cookie": "session=1", "x-run": "yes"}
        return JSONResponse({"item": item, "run": len(rig.runs)}, headers=headers)

    @app.post("/counted")
    async def counted_post(request: Request, charge: Paid) -> JSONResponse:
        rig.runs.append("post")
        return JSONResponse({"body": (await request.json()), "run": len(rig.runs)}, 201)

    @app.get("/slow")
    async def slow(charge: Paid) -> dict[str, int]:
        rig.runs.append("slow")
        rig.started.set()
        await asyncio.wait_for(rig.gate.wait(), 30)
        return {"run": len(rig.runs)}

    @app.get("/flaky")
    async def flaky(charge: Paid) -> JSONResponse:
        rig.runs.append("flaky")
        if rig.fail_next and rig.fail_next.pop(0):
            return JSONResponse({"error": "upstream down"}, 503)
        return JSONResponse({"run": len(rig.runs)})

    @app.get("/stream")
    async def stream(charge: Paid) -> StreamingResponse:
        rig.runs.append("stream")

        async def chunks() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"chunk {n}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/after")
    async def after(charge: Paid) -> JSONResponse:
        rig.runs.append("after")

        def fails_later() -> None:
            raise RuntimeError("a background task failing after the answer went out")

        return JSONResponse({"run": len(rig.runs)}, background=BackgroundTask(fails_later))

    @app.get("/large")
    async def large(charge: Paid) -> JSONResponse:
        rig.runs.append("large")
        return JSONResponse({"blob": "x" * 100_000})


@pytest.fixture
async def rig(pool: db.Pool) -> AsyncIterator[Rig]:
    app = app_for(pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        token = (await buy_token(http, pool))["token"]
        r = Rig(http, pool, token)
        add_routes(app, r)
        yield r


async def test_n_replays_run_the_handler_once_and_get_the_stored_answer(rig: Rig) -> None:
    headers = rig.headers("order-1")
    first = await rig.http.get("/counted/a?x=1", headers=headers)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    replays = [await rig.http.get("/counted/a?x=1", headers=headers) for _ in range(5)]
    assert rig.runs == ["a"]  # exactly one run over six calls
    for r in replays:
        assert (r.status_code, r.content) == (200, first.content)
        assert r.headers["idempotent-replayed"] == "true"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["etag"] == first.headers["etag"]
        assert "set-cookie" not in r.headers and "x-run" not in r.headers
    assert await rig.remaining() == 9
    assert await rig.pool.fetchval("SELECT count(*) FROM token_usage") == 1


async def test_the_same_key_on_another_request_is_422(rig: Rig) -> None:
    headers = rig.headers("order-2")
    assert (await rig.http.get("/counted/a?x=1", headers=headers)).status_code == 200
    for other in ("/counted/a?x=2", "/counted/a", "/counted/b?x=1"):
        refused = await rig.http.get(other, headers=headers)
        assert refused.status_code == 422, other
        assert refused.json()["error"] == "idempotency_key_reused"
    post = {**headers, "Idempotency-Key": "order-3"}
    assert (await rig.http.post("/counted", json={"n": 1}, headers=post)).status_code == 201
    other_body = await rig.http.post("/counted", json={"n": 2}, headers=post)
    assert other_body.status_code == 422 and other_body.json()["error"] == "idempotency_key_reused"
    same_body = await rig.http.post("/counted", json={"n": 1}, headers=post)
    assert same_body.status_code == 201 and same_body.headers["idempotent-replayed"] == "true"
    assert rig.runs == ["a", "post"]
    assert await rig.remaining() == 8


async def test_a_replay_while_the_first_call_runs_is_409(rig: Rig) -> None:
    headers = rig.headers("order-4")
    first = asyncio.create_task(rig.http.get("/slow", headers=headers))
    await asyncio.wait_for(rig.started.wait(), 30)
    twins = await asyncio.gather(*(rig.http.get("/slow", headers=headers) for _ in range(3)))
    for twin in twins:
        assert twin.status_code == 409 and twin.json()["error"] == "idempotency_key_in_progress"
        assert "retry-after" in twin.headers
    rig.gate.set()
    done = await first
    assert done.status_code == 200
    after = await rig.http.get("/slow", headers=headers)
    assert (after.status_code, after.content) == (200, done.content)
    assert rig.runs == ["slow"]
    assert await rig.remaining() == 9


async def test_an_expired_key_is_forgotten_and_the_call_is_new(rig: Rig) -> None:
    headers = rig.headers("order-5")
    assert (await rig.http.get("/counted/a", headers=headers)).status_code == 200
    ends = await rig.pool.fetchrow(
        "SELECT u.key_expires_at, t.expires_at FROM token_usage u"
        " JOIN access_tokens t ON t.id = u.token_id"
    )
    assert ends is not None
    assert ends["key_expires_at"] == ends["expires_at"]  # the token ends before 24 h pass
    await rig.pool.execute("UPDATE token_usage SET key_expires_at = now() - interval '1 second'")
    again = await rig.http.get("/counted/a", headers=headers)
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert again.json()["run"] == 2 and rig.runs == ["a", "a"]
    assert await rig.remaining() == 8
    replay = await rig.http.get("/counted/a", headers=headers)  # the new call is the one kept
    assert replay.headers["idempotent-replayed"] == "true" and replay.json()["run"] == 2
    assert rig.runs == ["a", "a"]


async def test_a_5xx_is_refunded_and_its_retry_charged_and_run_once(rig: Rig) -> None:
    headers = rig.headers("order-6")
    rig.fail_next = [True]
    failed = await rig.http.get("/flaky", headers=headers)
    assert failed.status_code == 503 and await rig.remaining() == 10
    retried = await rig.http.get("/flaky", headers=headers)
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert await rig.remaining() == 9
    replay = await rig.http.get("/flaky", headers=headers)
    assert replay.headers["idempotent-replayed"] == "true"
    assert (replay.status_code, replay.content) == (200, retried.content)
    assert rig.runs == ["flaky", "flaky"]
    assert await rig.remaining() == 9


@pytest.mark.parametrize("route", ["/stream", "/large"])
async def test_a_streamed_or_large_answer_is_not_replayed(rig: Rig, route: str) -> None:
    headers = rig.headers("order-7")
    first = await rig.http.get(route, headers=headers)
    assert first.status_code == 200 and len(first.content) > 0
    for _ in range(2):
        replay = await rig.http.get(route, headers=headers)
        assert replay.status_code == 409
        assert replay.json()["error"] == "idempotency_answer_not_stored"
    assert rig.runs == [route.strip("/")]
    assert await rig.remaining() == 9
    row = await rig.pool.fetchrow("SELECT replay_state, response_body FROM token_usage")
    assert row is not None and (row["replay_state"], row["response_body"]) == ("unreplayable", None)


async def test_a_call_lost_between_charge_and_store_is_never_run_free(rig: Rig) -> None:
    headers = rig.headers("order-8")
    assert (await rig.http.get("/counted/a", headers=headers)).status_code == 200
    # What a crash after the charge leaves: the row still 'running', long ago.
    await rig.pool.execute(
        "UPDATE token_usage SET replay_state = 'running', response_body = NULL,"
        " created_at = now() - interval '11 minutes'"
    )
    lost = await rig.http.get("/counted/a", headers=headers)
    assert lost.status_code == 409 and lost.json()["error"] == "idempotency_key_abandoned"
    fresh = await rig.http.get("/counted/a", headers=rig.headers("order-9"))
    assert fresh.status_code == 200
    assert rig.runs == ["a", "a"] and await rig.remaining() == 8


async def test_keys_are_per_token(rig: Rig) -> None:
    other = (await buy_token(rig.http, rig.pool))["token"]
    mine = await rig.http.get("/counted/a", headers=rig.headers("shared"))
    theirs = await rig.http.get(
        "/counted/a", headers={"x-payment-token": other, "Idempotency-Key": "shared"}
    )
    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers and rig.runs == ["a", "a"]


async def test_replays_buy_nothing_once_the_token_is_spent(rig: Rig) -> None:
    await rig.pool.execute("UPDATE access_tokens SET remaining = 1")
    headers = rig.headers("order-10")
    assert (await rig.http.get("/counted/a", headers=headers)).status_code == 200
    for _ in range(3):
        assert (await rig.http.get("/counted/a", headers=headers)).status_code == 200
    spent = await rig.http.get("/counted/b", headers=rig.headers("order-11"))
    assert spent.status_code == 402 and spent.json()["error"] == "token_exhausted"
    assert rig.runs == ["a"]


async def test_cleanup_drops_the_answers_of_expired_keys(rig: Rig) -> None:
    assert (await rig.http.get("/counted/a", headers=rig.headers("old"))).status_code == 200
    assert (await rig.http.get("/counted/b", headers=rig.headers("new"))).status_code == 200
    await rig.pool.execute(
        "UPDATE token_usage SET key_expires_at = now() - interval '1 second'"
        " WHERE idempotency_key = 'old'"
    )
    cleaned = await rig.http.post("/x402/cleanup", headers=ADMIN_HEADERS)
    assert cleaned.status_code == 200 and cleaned.json()["idempotency_keys_forgotten"] == 1
    rows = await rig.pool.fetch(
        "SELECT idempotency_key, response_body IS NOT NULL AS kept FROM token_usage ORDER BY id"
    )
    assert [(r["idempotency_key"], r["kept"]) for r in rows] == [(None, False), ("new", True)]


async def test_a_failure_after_the_answer_went_out_refunds_nothing(rig: Rig) -> None:
    # The server drops the connection after such a failure: no keep-alive for this one.
    headers = {**rig.headers("order-12"), "connection": "close"}
    served = await rig.http.get("/after", headers=headers)
    assert served.status_code == 200 and served.json() == {"run": 1}
    assert await rig.remaining() == 9  # served in full: charged
    replay = await rig.http.get("/after", headers=headers)
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == {"run": 1}
    assert rig.runs == ["after"]
    assert await rig.pool.fetchval("SELECT count(*) FROM token_usage WHERE refunded") == 0
