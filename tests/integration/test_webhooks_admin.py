"""Webhook endpoints through the admin API as an operator meets it: create (secret once),
list, get, update, delete (pending deliveries cancelled), rotate with a grace period;
every change audited; bad input a JSON 4xx. Real PostgreSQL, real ASGI HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from devkit.api_support import ADMIN_HEADERS, app_for, client, record_payment
from watcher import db

ADMIN = ADMIN_HEADERS
BASE = "/x402/admin/webhooks"
WHSEC = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")


def assert_error(resp: httpx.Response, status: int, error: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["error"] == error and body["message"] and body["fix"], body
    return body


async def make(http: httpx.AsyncClient, **over: Any) -> dict[str, Any]:
    body = {"url": "https://hooks.example.com/usdc", "events": ["payment.credited"], **over}
    resp = await http.post(BASE, headers=ADMIN, json=body)
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


async def test_create_shows_the_secret_once_then_list_get_update(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        made = await make(http, description="orders", events=["payment.credited", "invoice.paid"])
        assert WHSEC.match(made["secret"]) and made["enabled"] is True
        assert made["events"] == ["invoice.paid", "payment.credited"]
        assert re.match(r"^we_[0-9a-f]{32}$", made["id"]) and made["created_at"]
        stored = await pool.fetchval("SELECT secret FROM webhook_endpoints")
        assert stored == made["secret"]
        listed = await http.get(BASE, headers=ADMIN)
        assert listed.status_code == 200 and made["secret"] not in listed.text
        (item,) = listed.json()["webhooks"]
        assert (item["id"], item["description"]) == (made["id"], "orders")
        one = await http.get(f"{BASE}/{made['id']}", headers=ADMIN)
        assert one.status_code == 200 and "secret" not in one.json()
        changed = await http.patch(
            f"{BASE}/{made['id']}",
            headers=ADMIN,
            json={"events": ["*"], "enabled": False, "description": None},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["events"] == ["*"] and changed.json()["enabled"] is False
        assert changed.json()["description"] is None and "secret" not in changed.json()
        assert changed.json()["disabled_reason"] == "disabled by the operator"
        await pool.execute("UPDATE webhook_endpoints SET failing_since = now()")
        back = await http.patch(f"{BASE}/{made['id']}", headers=ADMIN, json={"enabled": True})
        assert back.json()["enabled"] is True
        assert (back.json()["disabled_at"], back.json()["failing_since"]) == (None, None)
        await http.patch(f"{BASE}/{made['id']}", headers=ADMIN, json={"enabled": False})
        url = await http.patch(
            f"{BASE}/{made['id']}", headers=ADMIN, json={"url": "https://other.example/h"}
        )
        assert url.json()["url"] == "https://other.example/h" and url.json()["events"] == ["*"]
    audit = await pool.fetch(
        "SELECT action, subject, detail::text, client FROM admin_audit ORDER BY id"
    )
    assert [(a["action"], a["subject"]) for a in audit] == [
        ("webhook.create", made["id"]),
        ("webhook.update", made["id"]),
        ("webhook.update", made["id"]),
        ("webhook.update", made["id"]),
        ("webhook.update", made["id"]),
    ]
    assert all(made["secret"] not in a["detail"] and a["client"] for a in audit)


async def test_bad_input_is_a_json_4xx_naming_the_problem(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        assert_error(
            await http.post(BASE, json={"url": "https://a.example/h", "events": ["*"]}),
            403,
            "admin_forbidden",
        )
        wrong = await http.post(
            BASE, headers=ADMIN, json={"url": "https://a.example/h", "events": ["payment.paid"]}
        )
        body = assert_error(wrong, 422, "unknown_event_type")
        assert "payment.paid" in body["message"] and "payment.credited" in body["fix"]
        for url in ("ftp://a.example/h", "https:///nohost", "not a url", "https://a.example/\x00"):
            bad = await http.post(BASE, headers=ADMIN, json={"url": url, "events": ["*"]})
            assert_error(bad, 422, "invalid_url")
        assert_error(
            await http.post(BASE, headers=ADMIN, json={"url": "https://a.example/h"}),
            422,
            "invalid_request",
        )
        assert_error(
            await http.post(
                BASE,
                headers=ADMIN,
                json={"url": "https://a.example/h", "events": ["*"], "secret": "whsec_mine"},
            ),
            422,
            "invalid_request",
        )
        missing = "we_" + "0" * 32
        assert_error(await http.get(f"{BASE}/{missing}", headers=ADMIN), 404, "unknown_webhook")
        assert_error(await http.get(f"{BASE}/nope", headers=ADMIN), 422, "invalid_request")
        made = await make(http)
        path = f"{BASE}/{made['id']}"
        assert_error(await http.patch(path, headers=ADMIN, json={}), 422, "nothing_to_change")
        assert_error(
            await http.patch(path, headers=ADMIN, json={"enabled": None}), 422, "invalid_request"
        )
        assert_error(
            await http.patch(path, headers=ADMIN, json={"events": ["nope.x"]}),
            422,
            "unknown_event_type",
        )
        assert_error(
            await http.post(f"{path}/rotate-secret", headers=ADMIN, json={"grace_hours": -1}),
            422,
            "invalid_request",
        )
        assert_error(
            await http.patch(f"{BASE}/{missing}", headers=ADMIN, json={"enabled": True}),
            404,
            "unknown_webhook",
        )
    assert await pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 1
    # the one endpoint made; nothing else was written, not even an audit row
    assert await pool.fetchval("SELECT count(*) FROM admin_audit") == 1


async def test_rotation_keeps_the_old_secret_for_the_grace(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        made = await make(http)
        path = f"{BASE}/{made['id']}/rotate-secret"
        rotated = await http.post(path, headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert WHSEC.match(new) and new != made["secret"]
        row = await pool.fetchrow(
            "SELECT secret, previous_secret, previous_secret_until - now() AS left "
            "FROM webhook_endpoints"
        )
        assert (row["secret"], row["previous_secret"]) == (new, made["secret"])
        assert timedelta(hours=23, minutes=59) < row["left"] <= timedelta(hours=24)
        until = datetime.fromisoformat(rotated.json()["previous_secret_until"])
        assert until > datetime.now(UTC) + timedelta(hours=23)
        listed = (await http.get(BASE, headers=ADMIN)).text
        assert new not in listed and made["secret"] not in listed
        now = await http.post(path, headers=ADMIN, json={"grace_hours": 0})
        assert now.json()["previous_secret_until"] is None
        row = await pool.fetchrow("SELECT secret, previous_secret FROM webhook_endpoints")
        assert (row["secret"], row["previous_secret"]) == (now.json()["secret"], None)
    actions = await pool.fetch("SELECT action, detail::text FROM admin_audit ORDER BY id")
    assert [a["action"] for a in actions] == ["webhook.create"] + ["webhook.rotate_secret"] * 2
    assert not any(new in a["detail"] for a in actions)


async def test_delete_is_soft_and_cancels_what_was_still_to_be_sent(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        gone = await make(http)
        kept = await make(http, url="https://kept.example/h")
        await record_payment(pool)  # payment.observed + payment.credited; both get a delivery
        due = "SELECT endpoint_id, status FROM webhook_deliveries ORDER BY endpoint_id"
        assert {tuple(r.values()) for r in await pool.fetch(due)} == {
            (gone["id"], "pending"),
            (kept["id"], "pending"),
        }
        await pool.execute(
            "UPDATE webhook_deliveries SET status = 'succeeded' WHERE endpoint_id = $1", kept["id"]
        )
        deleted = await http.delete(f"{BASE}/{gone['id']}", headers=ADMIN)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"id": gone["id"], "deleted": True, "deliveries_cancelled": 1}
        assert_error(
            await http.delete(f"{BASE}/{gone['id']}", headers=ADMIN), 404, "unknown_webhook"
        )
        assert_error(await http.get(f"{BASE}/{gone['id']}", headers=ADMIN), 404, "unknown_webhook")
        assert [w["id"] for w in (await http.get(BASE, headers=ADMIN)).json()["webhooks"]] == [
            kept["id"]
        ]
        await record_payment(pool)  # a deleted endpoint gets nothing new
    rows = {tuple(r.values()) for r in await pool.fetch(due)}
    assert rows == {(gone["id"], "cancelled"), (kept["id"], "succeeded"), (kept["id"], "pending")}
    assert await pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM webhook_endpoints WHERE id = $1", gone["id"]
    )


async def test_urls_are_judged_by_netguard_on_create_and_update(pool: db.Pool) -> None:
    refused = [
        "https://127.0.0.1/h",
        "https://10.0.0.1/h",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/h",
        "https://[::ffff:127.0.0.1]/h",
        "https://0.0.0.0/h",
        "https://2130706433/h",
        "https://user:pw@hooks.example.com/h",
        "http://hooks.example.com/h",  # plain http in production
    ]
    async with client(app_for(pool, watcher_env="production")) as http:
        made = await make(http)
        for url in refused:
            bad = await http.post(BASE, headers=ADMIN, json={"url": url, "events": ["*"]})
            assert "refused" in assert_error(bad, 422, "invalid_url")["message"], url
            moved = await http.patch(f"{BASE}/{made['id']}", headers=ADMIN, json={"url": url})
            assert_error(moved, 422, "invalid_url")
    assert await pool.fetchval("SELECT url FROM webhook_endpoints") == made["url"]
    async with client(app_for(pool)) as http:  # development: loopback is how tests deliver
        local = await make(http, url="http://127.0.0.1:8080/hooks")
        assert local["url"] == "http://127.0.0.1:8080/hooks"
        private = await http.post(BASE, headers=ADMIN, json={"url": refused[1], "events": ["*"]})
        assert_error(private, 422, "invalid_url")
