"""The event feed as a pull consumer meets it: a read-only key (or the admin key), a
cursor, a type filter, a limit; with writers whose transactions overlap and commit out
of order, a consumer paging with after= never skips an event nor sees one twice."""

from __future__ import annotations

import asyncio
import random
import secrets
from typing import Any

import asyncpg
import httpx

from api.app import create_app
from devkit.api_support import (
    ADMIN_HEADERS,
    ADMIN_KEY,
    BASE_RECEIVER,
    BASE_USDC,
    app_for,
    client,
    evm_hash,
    make_settings,
    record_payment,
)
from watcher import db, event_feed, events, ledger

ADMIN = ADMIN_HEADERS
FEED = "/x402/events"


async def read_key(pool: db.Pool, name: str = "orders") -> tuple[int, dict[str, str]]:
    async with pool.acquire() as conn:
        made = await event_feed.create_key(conn, name)
    return made.id, {"authorization": f"Bearer {made.key}"}


async def fetch(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = await http.get(FEED, headers=headers, params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def drain(
    http: httpx.AsyncClient, headers: dict[str, str], after: str | None, limit: int, **kw: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """Every page from ``after`` until the feed has nothing more; (items, last cursor)."""
    items: list[dict[str, Any]] = []
    for _ in range(100_000):
        params: dict[str, Any] = {"limit": limit, **kw}
        if after is not None:
            params["after"] = after
        page = await fetch(http, headers, **params)
        items += page["data"]
        after = page["next"]
        if not page["has_more"]:
            return items, after
    raise AssertionError("the feed never ended")


async def feed_order(pool: db.Pool) -> list[int]:
    return [int(r["id"]) for r in await pool.fetch("SELECT id FROM events ORDER BY txid, id")]


async def test_keys_the_feed_takes_and_refuses(pool: db.Pool) -> None:
    await record_payment(pool)
    key_id, reader = await read_key(pool)
    async with client(app_for(pool)) as http:
        for headers in (reader, ADMIN):
            page = await fetch(http, headers)
            assert [e["type"] for e in page["data"]] == ["payment.observed", "payment.credited"]
        none = await http.get(FEED)
        assert none.status_code == 401 and none.json()["error"] == "feed_key_missing"
        for bad in (
            {"authorization": "Bearer erk_wrong"},
            {"authorization": "Basic abc"},
            {"x-admin-key": ADMIN_KEY[:-1]},
        ):
            refused = await http.get(FEED, headers=bad)
            assert refused.status_code == 403 and refused.json()["fix"], bad
        async with pool.acquire() as conn:
            assert await event_feed.revoke_key(conn, key_id)
            assert not await event_feed.revoke_key(conn, key_id)
        assert (await http.get(FEED, headers=reader)).status_code == 403
        # a read key never opens the admin routes
        _, other = await read_key(pool, "other")
        assert (await http.get("/x402/admin/events", headers=other)).status_code == 403
        assert (await http.get("/x402/admin/webhooks", headers=other)).status_code == 403
    stored = await pool.fetchval(
        "SELECT string_agg(row_to_json(k)::text, '') FROM event_read_keys k"
    )
    assert other["authorization"].split()[1] not in stored  # only the hash is kept
    async with client(app_for(pool, x402_admin_key=None)) as http:  # admin off: keys still work
        assert (await http.get(FEED, headers=other)).status_code == 200
        assert (await http.get(FEED, headers=ADMIN)).status_code == 403
    public = create_app(make_settings(), pool, admin=False)  # the gateway's own listener
    async with client(public) as http:
        assert (await http.get(FEED, headers=other)).status_code == 404


async def test_items_are_the_wire_format_and_bad_input_is_a_4xx(pool: db.Pool) -> None:
    pid, _ = await record_payment(pool)
    async with client(app_for(pool)) as http:
        page = await fetch(http, ADMIN)
        first, second = page["data"]
        assert list(first) == ["id", "type", "timestamp", "sequence", "data"]
        assert first["id"] == events.public_id(first["sequence"])
        assert first["data"]["id"] == str(pid) and first["timestamp"].endswith("Z")
        assert page["next"] == second["id"] and page["has_more"] is False
        same = await http.get("/x402/admin/events", headers=ADMIN)
        assert same.json() == page
        after = await fetch(http, ADMIN, after=second["id"])
        assert after == {"data": [], "next": second["id"], "has_more": False}
        assert (await fetch(http, ADMIN, after=str(first["sequence"])))["data"] == [second]
        cases = [
            ({"after": "evt_999999"}, 400, "unknown_cursor"),
            ({"after": "evt_x"}, 400, "invalid_cursor"),
            ({"after": "-1"}, 400, "invalid_cursor"),
            ({"type": "payment.nope"}, 422, "unknown_event_type"),
            ({"limit": 0}, 422, "invalid_request"),
            ({"limit": event_feed.MAX_LIMIT + 1}, 422, "invalid_request"),
            ({"limit": "many"}, 422, "invalid_request"),
        ]
        for params, status, error in cases:
            resp = await http.get(FEED, headers=ADMIN, params=params)
            assert resp.status_code == status and resp.json()["error"] == error, (params, resp.text)
            assert "payment.credited" in resp.json()["fix"] or status != 422 or "type" not in params


async def test_a_type_filter_moves_the_cursor_past_what_it_leaves_out(pool: db.Pool) -> None:
    for _ in range(3):
        await record_payment(pool)
    async with client(app_for(pool)) as http:
        credited = await fetch(http, ADMIN, type="payment.credited", limit=2)
        assert [e["type"] for e in credited["data"]] == ["payment.credited"] * 2
        assert credited["has_more"] is True
        rest = await fetch(http, ADMIN, type="payment.credited", after=credited["next"])
        assert len(rest["data"]) == 1 and rest["has_more"] is False
        both = await fetch(http, ADMIN, type=["payment.credited", "payment.observed"], limit=100)
        assert len(both["data"]) == 6
        none = await fetch(http, ADMIN, type="invoice.expired")
        # nothing of that type, but every event so far is behind the cursor now
        assert none["data"] == [] and none["next"] == both["next"]


async def test_pages_through_10000_events_with_no_gap_or_repeat(pool: db.Pool) -> None:
    for chunk in range(10):  # ten transactions, one after the other
        await pool.execute(
            "SELECT emit_events($1, 'subscription', array_agg('sub_' || g),"
            " array_agg(jsonb_build_object('n', g))) FROM generate_series($2, $2 + 999) g",
            "subscription.activated" if chunk % 2 else "subscription.cancelled",
            chunk * 1000,
        )
    want = await feed_order(pool)
    assert len(want) == 10_000
    async with client(app_for(pool)) as http:
        for limit in (1000, 337):
            items, last = await drain(http, ADMIN, None, limit)
            assert [e["sequence"] for e in items] == want
            assert last == events.public_id(want[-1])
        half, _ = await drain(http, ADMIN, None, 500, type="subscription.activated")
        odd = [want[c * 1000 : (c + 1) * 1000] for c in range(1, 10, 2)]
        assert [e["sequence"] for e in half] == [i for chunk in odd for i in chunk]


def transfer() -> ledger.Transfer:
    return ledger.Transfer(
        chain="base",
        tx_hash=evm_hash(0),
        log_index=0,
        block_number=100,
        block_hash="0x" + secrets.token_hex(32),
        token=BASE_USDC,
        to_address=BASE_RECEIVER,
        amount=1_000_000,
        from_address="0x" + "12" * 20,
    )


async def _writer(dsn: str, k: int, rounds: int, seed: int) -> list[str]:
    """Transactions that write events, hold them open a while, and commit (or roll back);
    returns the resource ids it committed. Even writers credit a payment first, through
    the ledger (its ``payment.credited`` event), as a follower's step does."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    committed: list[str] = []
    try:
        for r in range(rounds):
            tx = conn.transaction()
            await tx.start()
            ids = []
            if k % 2 == 0:
                (row,) = await ledger.record_credited(conn, [transfer()])
                ids.append(str(row["id"]))
            for j in range(rng.randint(1, 4)):
                ids.append(f"w{k}r{r}e{j}")
                await events.emit(conn, "subscription.tier_changed", ids[-1], {"writer": k})
                await asyncio.sleep(rng.uniform(0, 0.03))
            if rng.random() < 0.15:
                await tx.rollback()
            else:
                await tx.commit()
                committed += ids
            await asyncio.sleep(rng.uniform(0, 0.01))
    finally:
        await conn.close()
    return committed


async def test_overlapping_writers_committing_out_of_order(
    pool: db.Pool, database_url: str
) -> None:
    async with client(app_for(pool)) as http:
        # the simplest case first: B writes after A but commits first
        a, b = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
        try:
            ta, tb = a.transaction(), b.transaction()
            await ta.start()
            await tb.start()
            await events.emit(a, "subscription.activated", "sub_a", {})
            await events.emit(b, "subscription.activated", "sub_b", {})
            await tb.commit()
            held = await fetch(http, ADMIN)
            assert held == {"data": [], "next": None, "has_more": False}  # B waits for A
            await ta.commit()
            page = await fetch(http, ADMIN)
            assert [e["data"]["id"] for e in page["data"]] == ["sub_a", "sub_b"]
        finally:
            await a.close()
            await b.close()
        cursor = page["next"]
        seen: list[dict[str, Any]] = []
        writers = asyncio.gather(*(_writer(database_url, k, rounds=25, seed=k) for k in range(6)))
        while not writers.done():
            got, cursor = await drain(http, ADMIN, cursor, random.choice([1, 3, 10]))
            seen += got
            await asyncio.sleep(0.005)
        committed = [rid for w in await writers for rid in w]
        got, cursor = await drain(http, ADMIN, cursor, 50)
        seen += got
    ids = [e["data"]["id"] for e in seen]
    assert len(ids) == len(set(ids))  # no repeat
    assert sorted(ids) == sorted(committed)  # no gap, nothing rolled back
    order = (await feed_order(pool))[2:]
    assert [e["sequence"] for e in seen] == order  # the feed's order, every time
    assert len(committed) > 100
    assert sum(e["type"] == "payment.credited" for e in seen) > 20  # the ledger's writers too
