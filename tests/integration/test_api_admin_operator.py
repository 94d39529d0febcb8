"""Every admin request names its operator (``x-admin-operator``): reads and changes alike,
the key checked first, the name recorded with each change (issue 16: one shared admin
key cannot tell people apart). Real PostgreSQL, real ASGI HTTP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from api.app import create_app
from devkit.api_support import (
    ADMIN_HEADERS,
    ADMIN_KEY,
    OPERATOR,
    app_for,
    client,
    make_settings,
    record_payment,
)
from watcher import db, event_feed, gateway_config

KEY_ONLY = {"x-admin-key": ADMIN_KEY}
GATEWAY_TOML = """
[upstreams.weather]
url = "http://127.0.0.1:9"

[[routes]]
method = "GET"
path = "/v1/health"
upstream = "weather"
price_usd = "0.30"
"""


FEED = "/x402/events"  # the admin key or a machine's read key: its own test below


def operations(app: FastAPI) -> dict[tuple[str, str], set[str]]:
    """(method, path with sample parameters) -> the headers it declares, from OpenAPI."""
    out = {}
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            heads = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
            out[(method.upper(), re.sub(r"\{[^}]+\}", "1", path))] = heads
    return out


def with_gateway(pool: db.Pool, tmp_path: Path) -> FastAPI:
    settings = make_settings()
    (tmp_path / "gateway.toml").write_text(GATEWAY_TOML)
    return create_app(
        settings, pool, gateway=gateway_config.load(tmp_path / "gateway.toml", settings)
    )


def assert_error(resp: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["error"] == error and body["message"] and body["fix"], body
    return body


async def test_every_admin_route_wants_the_key_then_the_operator(
    pool: db.Pool, tmp_path: Path
) -> None:
    app = with_gateway(pool, tmp_path)
    ops = operations(app)
    routes = [k for k, heads in ops.items() if "x-admin-key" in heads and k[1] != FEED]
    paths = {p for _, p in routes}
    # every route behind the key asks the operator; every route named admin is behind it
    assert all("x-admin-operator" in ops[k] for k in routes)
    assert [k for k in ops if "/admin" in k[1] and k not in routes] == []
    assert {"/x402/admin/stats", "/x402/cleanup", "/x402/admin/payments/1/mark"} <= paths
    assert {"/x402/admin/webhooks", "/x402/admin/events", "/x402/admin/service-keys"} <= paths
    async with client(app) as http:
        for method, path in routes:
            # a wrong key with no operator: 403, so a caller without the key learns nothing
            wrong = await http.request(method, path, headers={"x-admin-key": "nope"})
            assert_error(wrong, 403, "admin_forbidden")
            nameless = await http.request(method, path, headers=KEY_ONLY)
            body = assert_error(nameless, 400, "operator_required")
            assert "x-admin-operator" in body["fix"]
            bad = await http.request(method, path, headers={**KEY_ONLY, "x-admin-operator": "<b>"})
            assert_error(bad, 400, "operator_invalid")
    assert await pool.fetchval("SELECT count(*) FROM admin_audit") == 0


async def test_a_read_and_a_change_without_the_operator(pool: db.Pool) -> None:
    pid, _ = await record_payment(pool, credit=False)
    mark = {"action": "settle", "reason": "seen on the explorer"}
    async with client(app_for(pool)) as http:
        assert_error(
            await http.get("/x402/admin/stats", headers=KEY_ONLY), 400, "operator_required"
        )
        blank = {**KEY_ONLY, "x-admin-operator": "   "}
        assert_error(await http.get("/x402/admin/stats", headers=blank), 400, "operator_required")
        refused = await http.post(f"/x402/admin/payments/{pid}/mark", headers=KEY_ONLY, json=mark)
        assert_error(refused, 400, "operator_required")
        long = {**KEY_ONLY, "x-admin-operator": "a" * 65}
        refused = await http.post(f"/x402/admin/payments/{pid}/mark", headers=long, json=mark)
        assert_error(refused, 400, "operator_invalid")
        # no key and no operator: the key's 403, not the operator's 400
        assert_error(
            await http.post(f"/x402/admin/payments/{pid}/mark", json=mark), 403, "admin_forbidden"
        )
        assert (await http.get("/x402/admin/stats", headers=ADMIN_HEADERS)).status_code == 200
    assert await pool.fetchval("SELECT state FROM payments WHERE id = $1", pid) == "observed"
    assert await pool.fetchval("SELECT count(*) FROM admin_audit") == 0
    async with client(app_for(pool, x402_admin_key=None)) as http:  # admin off: still 403
        assert_error(await http.get("/x402/admin/stats"), 403, "admin_disabled")


async def test_a_mark_records_its_operator(pool: db.Pool) -> None:
    pid, _ = await record_payment(pool, credit=False)
    who = {**ADMIN_HEADERS, "x-admin-operator": "  Alice Smith  "}  # stripped
    async with client(app_for(pool)) as http:
        got = await http.post(
            f"/x402/admin/payments/{pid}/mark",
            headers=who,
            json={"action": "settle", "reason": "seen on the explorer"},
        )
    assert got.status_code == 200, got.text
    assert got.json()["operator"] == "Alice Smith"
    row = await pool.fetchrow("SELECT action, payment_id, operator, client FROM admin_audit")
    assert (row["action"], row["payment_id"], row["operator"]) == ("settle", pid, "Alice Smith")
    assert row["client"]  # where from, beside who
    # the payment's reason, which watcher explain shows, names the operator too
    reason = await pool.fetchval("SELECT reason FROM payments WHERE id = $1", pid)
    assert reason == "settle by operator Alice Smith: seen on the explorer"


async def test_webhook_and_service_key_changes_record_their_operator(
    pool: db.Pool, tmp_path: Path
) -> None:
    async with client(with_gateway(pool, tmp_path)) as http:
        hook = await http.post(
            "/x402/admin/webhooks",
            headers=ADMIN_HEADERS,
            json={"url": "https://hooks.example.com/usdc", "events": ["payment.credited"]},
        )
        assert hook.status_code == 201, hook.text
        bob = {**ADMIN_HEADERS, "x-admin-operator": "bob@example.com"}
        made = await http.post(
            "/x402/admin/service-keys", headers=bob, json={"name": "queue", "all_routes": True}
        )
        assert made.status_code == 201, made.text
        key_id = made.json()["id"]
        gone = await http.post(
            f"/x402/admin/service-keys/{key_id}/revoke", headers=ADMIN_HEADERS, json={"reason": "x"}
        )
        assert gone.status_code == 200, gone.text
        again = await http.post(
            f"/x402/admin/service-keys/{key_id}/revoke", headers=ADMIN_HEADERS, json={"reason": "y"}
        )
        assert again.status_code == 404  # nothing revoked, nothing audited
        listed = await http.get("/x402/admin/service-keys", headers=bob)  # reads: not audited
        assert listed.status_code == 200
    audit = await pool.fetch(
        "SELECT action, subject, operator, detail::text FROM admin_audit ORDER BY id"
    )
    assert [(a["action"], a["subject"], a["operator"]) for a in audit] == [
        ("webhook.create", hook.json()["id"], OPERATOR),
        ("service_key.create", str(key_id), "bob@example.com"),
        ("service_key.revoke", str(key_id), OPERATOR),
    ]
    assert made.json()["key"] not in "".join(a["detail"] for a in audit)


async def test_the_feed_wants_an_operator_with_the_admin_key_only(pool: db.Pool) -> None:
    await record_payment(pool)
    async with pool.acquire() as conn:
        made = await event_feed.create_key(conn, "orders")
    reader = {"authorization": f"Bearer {made.key}"}
    async with client(app_for(pool)) as http:
        assert (await http.get("/x402/events", headers=reader)).status_code == 200  # a machine
        assert_error(await http.get("/x402/events", headers=KEY_ONLY), 400, "operator_required")
        assert (await http.get("/x402/events", headers=ADMIN_HEADERS)).status_code == 200
        wrong = {"x-admin-key": ADMIN_KEY[:-1]}
        assert_error(await http.get("/x402/events", headers=wrong), 403, "feed_key_refused")


async def test_the_audit_reads_back_who_did_what(pool: db.Pool) -> None:
    pid, _ = await record_payment(pool, credit=False)
    carol = {**ADMIN_HEADERS, "x-admin-operator": "carol"}
    async with client(app_for(pool)) as http:
        marked = await http.post(
            f"/x402/admin/payments/{pid}/mark",
            headers=carol,
            json={"action": "settle", "reason": "seen on the explorer"},
        )
        assert marked.status_code == 200, marked.text
        hook = await http.post(
            "/x402/admin/webhooks",
            headers=ADMIN_HEADERS,
            json={"url": "https://hooks.example.com/usdc", "events": ["*"]},
        )
        assert hook.status_code == 201, hook.text
        assert_error(
            await http.get("/x402/admin/audit", headers=KEY_ONLY), 400, "operator_required"
        )
        every = (await http.get("/x402/admin/audit", headers=ADMIN_HEADERS)).json()
        mine = await http.get(
            "/x402/admin/audit", headers=ADMIN_HEADERS, params={"operator": "carol"}
        )
        paged = await http.get("/x402/admin/audit", headers=ADMIN_HEADERS, params={"limit": 1})
        rest = await http.get(
            "/x402/admin/audit",
            headers=ADMIN_HEADERS,
            params={"before": paged.json()["next_before"]},
        )
        for bad in ({"subject": "a\x00"}, {"operator": "<b>"}, {"limit": 501}):
            refused = await http.get("/x402/admin/audit", headers=ADMIN_HEADERS, params=bad)
            assert refused.status_code == 422, (bad, refused.text)
        of_hook = await http.get(
            "/x402/admin/audit", headers=ADMIN_HEADERS, params={"subject": hook.json()["id"]}
        )
    assert [(a["action"], a["operator"]) for a in every["audit"]] == [
        ("webhook.create", OPERATOR),
        ("settle", "carol"),
    ]
    assert every["next_before"] is None
    assert every["audit"][0]["detail"]["events"] == ["*"]
    assert hook.json()["secret"] not in str(every)
    (settled,) = mine.json()["audit"]
    assert (settled["payment_id"], settled["from_state"], settled["to_state"]) == (
        pid,
        "observed",
        "credited",
    )
    assert settled["id"] == marked.json()["audit_id"] and settled["client"]
    assert [a["action"] for a in paged.json()["audit"]] == ["webhook.create"]
    assert [a["action"] for a in rest.json()["audit"]] == ["settle"]
    assert [a["action"] for a in of_hook.json()["audit"]] == ["webhook.create"]
