"""Events through the admin API: one event with its deliveries and attempts, redelivery
of one event to one endpoint, replay of everything since a time (bounded), all audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from devkit.api_support import app_for, client, record_payment
from tests.integration.test_webhooks_admin import ADMIN, BASE, assert_error, make
from watcher import db, events, webhook_admin


async def emit(pool: db.Pool, n: int, type_: str = "subscription.activated") -> list[int]:
    """``n`` events written the way the API's transitions write them."""
    async with pool.acquire() as conn, conn.transaction():
        for i in range(n):
            await events.emit(conn, type_, f"sub_{i}", {"tier": "pro"})
    rows = await pool.fetch("SELECT id FROM events WHERE type = $1 ORDER BY id", type_)
    return [int(r["id"]) for r in rows][-n:]


async def deliveries(pool: db.Pool, endpoint_id: str) -> dict[int, str]:
    rows = await pool.fetch(
        "SELECT event_id, status FROM webhook_deliveries WHERE endpoint_id = $1", endpoint_id
    )
    return {int(r["event_id"]): r["status"] for r in rows}


async def test_an_event_with_its_deliveries_and_attempts(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        hook = await make(http)
        pid, _ = await record_payment(pool)
        evt = await pool.fetchrow(
            "SELECT id, created_at FROM events WHERE type = 'payment.credited'"
        )
        delivery = await pool.fetchval("SELECT id FROM webhook_deliveries")
        # what the worker records of two attempts
        await pool.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, worker, started_at, duration_ms,"
            " status_code, error, response_snippet) VALUES"
            " ($1, 1, 'w1', now(), 12, 500, NULL, 'oops'), ($1, 2, 'w2', now(), 7, 204, NULL, '')",
            delivery,
        )
        got = await http.get(f"/x402/admin/events/{events.public_id(evt['id'])}", headers=ADMIN)
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["event"]["id"] == f"evt_{evt['id']}" and body["event"]["sequence"] == evt["id"]
        assert body["event"]["type"] == "payment.credited"
        assert (
            body["event"]["data"]["id"] == str(pid) and body["event"]["data"]["state"] == "credited"
        )
        assert body["event"]["timestamp"].endswith("Z")
        stamp = datetime.fromisoformat(body["event"]["timestamp"])
        assert stamp == evt["created_at"]
        (d,) = body["deliveries"]
        assert (d["endpoint_id"], d["url"], d["status"]) == (hook["id"], hook["url"], "pending")
        assert [(a["attempt"], a["worker"], a["status_code"]) for a in d["attempts_made"]] == [
            (1, "w1", 500),
            (2, "w2", 204),
        ]
        assert "secret" not in got.text and hook["secret"] not in got.text
        assert_error(
            await http.get("/x402/admin/events/evt_999999", headers=ADMIN), 404, "unknown_event"
        )
        assert_error(
            await http.get("/x402/admin/events/abc", headers=ADMIN), 422, "invalid_request"
        )
        assert_error(await http.get(f"/x402/admin/events/evt_{evt['id']}"), 403, "admin_forbidden")


async def test_redeliver_resets_or_creates_the_delivery_due_now(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        hook = await make(http)
        late = await make(http, url="https://late.example/h", events=["invoice.paid"])
        await record_payment(pool)
        evt = await pool.fetchval("SELECT id FROM events WHERE type = 'payment.credited'")
        await pool.execute(
            "UPDATE webhook_deliveries SET status = 'failed', attempts = 9,"
            " next_attempt_at = now() + interval '1 day', delivered_at = NULL"
        )
        path = f"/x402/admin/events/evt_{evt}/redeliver"
        again = await http.post(path, headers=ADMIN, json={"endpoint_id": hook["id"]})
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "pending" and again.json()["created"] is False
        row = await pool.fetchrow(
            "SELECT status, attempts, next_attempt_at <= now() AS due FROM webhook_deliveries"
            " WHERE endpoint_id = $1",
            hook["id"],
        )
        assert (row["status"], row["attempts"], row["due"]) == ("pending", 9, True)
        # an endpoint that never wanted the type gets it when the operator says so
        new = await http.post(path, headers=ADMIN, json={"endpoint_id": late["id"]})
        assert new.status_code == 200 and new.json()["created"] is True
        assert await deliveries(pool, late["id"]) == {evt: "pending"}
        await http.patch(f"{BASE}/{late['id']}", headers=ADMIN, json={"enabled": False})
        off = await http.post(path, headers=ADMIN, json={"endpoint_id": late["id"]})
        assert_error(off, 409, "endpoint_disabled")
        nobody = await http.post(path, headers=ADMIN, json={"endpoint_id": "we_" + "0" * 32})
        assert_error(nobody, 404, "unknown_webhook")
        noevent = await http.post(
            "/x402/admin/events/evt_999999/redeliver",
            headers=ADMIN,
            json={"endpoint_id": hook["id"]},
        )
        assert_error(noevent, 404, "unknown_event")
        assert_error(
            await http.post(path, headers=ADMIN, json={"endpoint_id": "x"}), 422, "invalid_request"
        )
    audit = await pool.fetch(
        "SELECT subject, detail FROM admin_audit WHERE action = 'event.redeliver' ORDER BY id"
    )
    assert [(a["subject"], json.loads(a["detail"])["endpoint_id"]) for a in audit] == [
        (f"evt_{evt}", hook["id"]),
        (f"evt_{evt}", late["id"]),
    ]


async def test_replay_queues_every_matching_event_since_a_time(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        hook = await make(http, events=["subscription.activated"])
        old = await emit(pool, 3)
        await pool.execute("UPDATE events SET created_at = now() - interval '2 days'")
        since = datetime.now(UTC) - timedelta(hours=1)
        recent = await emit(pool, 4)
        others = await emit(pool, 2, "subscription.cancelled")
        await pool.execute(
            "UPDATE webhook_deliveries SET status = 'succeeded' WHERE event_id = ANY ($1)",
            recent[:2],
        )
        await pool.execute("DELETE FROM webhook_deliveries WHERE event_id = $1", recent[3])
        path = f"{BASE}/{hook['id']}/replay"
        done = await http.post(path, headers=ADMIN, json={"since": since.isoformat()})
        assert done.status_code == 200, done.text
        assert done.json() == {
            "endpoint_id": hook["id"],
            "matched": 4,
            "created": 1,
            "reset": 2,
            "cap": webhook_admin.REPLAY_CAP,
        }
        got = await deliveries(pool, hook["id"])
        assert got == {i: "pending" for i in old + recent}
        wider = await http.post(
            path,
            headers=ADMIN,
            json={"since": since.isoformat(), "events": ["subscription.cancelled"]},
        )
        assert wider.json()["created"] == 2
        assert set(await deliveries(pool, hook["id"])) == set(old + recent + others)
        window = await http.post(
            path,
            headers=ADMIN,
            json={"since": (since - timedelta(days=3)).isoformat(), "until": since.isoformat()},
        )
        assert window.json()["matched"] == 3 and window.json()["created"] == 0
        assert_error(
            await http.post(path, headers=ADMIN, json={"since": "yesterday"}),
            422,
            "invalid_request",
        )
        assert_error(
            await http.post(path, headers=ADMIN, json={"since": "2026-01-01T00:00:00"}),
            422,
            "invalid_request",
        )  # no time zone: refused, not guessed
        assert_error(
            await http.post(
                path, headers=ADMIN, json={"since": since.isoformat(), "until": since.isoformat()}
            ),
            422,
            "invalid_window",
        )
        assert_error(
            await http.post(
                path, headers=ADMIN, json={"since": since.isoformat(), "events": ["nope.nope"]}
            ),
            422,
            "unknown_event_type",
        )
        missing = f"{BASE}/we_{'0' * 32}/replay"
        assert_error(
            await http.post(missing, headers=ADMIN, json={"since": since.isoformat()}),
            404,
            "unknown_webhook",
        )
    actions = await pool.fetch("SELECT action FROM admin_audit WHERE action = 'webhook.replay'")
    assert len(actions) == 3


async def test_a_replay_past_the_cap_is_refused_whole(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        hook = await make(http, events=["subscription.activated"])
        await pool.execute(
            "SELECT emit_events('subscription.activated', 'subscription',"
            " array_agg('sub_' || g), array_agg(jsonb_build_object('n', g)))"
            " FROM generate_series(1, $1) g",
            webhook_admin.REPLAY_CAP + 1,
        )
        await pool.execute("DELETE FROM webhook_deliveries")
        path = f"{BASE}/{hook['id']}/replay"
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        big = await http.post(path, headers=ADMIN, json={"since": since})
        body = assert_error(big, 422, "replay_too_large")
        assert str(webhook_admin.REPLAY_CAP) in body["message"] and "until" in body["fix"]
        assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        # in two windows, each under the cap
        first = await pool.fetchval("SELECT min(id) FROM events")
        await pool.execute(
            "UPDATE events SET created_at = now() - interval '30 minutes' WHERE id < $1 + 5000",
            first,
        )
        cut = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
        one = await http.post(path, headers=ADMIN, json={"since": since, "until": cut})
        two = await http.post(path, headers=ADMIN, json={"since": cut})
        assert (one.json()["created"], two.json()["created"]) == (5000, 5001)
        assert await pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 10_001
