"""Admin routes, rate limits and the error contract (every 4xx is JSON saying what to do)."""

from __future__ import annotations

from eth_account import Account

from devkit.api_support import (
    ADMIN_HEADERS,
    ADMIN_KEY,
    app_for,
    buy_token,
    client,
    fresh_rate_window,
    record_payment,
)
from watcher import db

ADMIN = ADMIN_HEADERS


def assert_error_shape(body: dict[str, object], error: str) -> None:
    assert body["error"] == error
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["fix"], str) and body["fix"]


async def test_admin_is_shut_without_a_real_key(pool: db.Pool) -> None:
    for key in (None, "YOUR_ADMIN_KEY_HERE"):
        async with client(app_for(pool, x402_admin_key=key)) as http:
            resp = await http.get(
                "/x402/admin/stats", headers={"x-admin-key": "YOUR_ADMIN_KEY_HERE"}
            )
            assert resp.status_code == 403
            assert_error_shape(resp.json(), "admin_disabled")
    async with client(app_for(pool)) as http:
        wrong = await http.get("/x402/admin/stats", headers={"x-admin-key": ADMIN_KEY[:-1]})
        assert wrong.status_code == 403
        assert_error_shape(wrong.json(), "admin_forbidden")
        assert (await http.post("/x402/cleanup")).status_code == 403


async def test_admin_stats_cleanup_and_audited_marks(pool: db.Pool) -> None:
    await fresh_rate_window()
    payer = Account.create().address.lower()
    stuck, _ = await record_payment(pool, from_address=payer, amount=2_000_000, credit=False)
    async with client(app_for(pool)) as http:
        bought = await buy_token(http, pool)
        settled = await http.post(
            f"/x402/admin/payments/{stuck}/mark",
            headers=ADMIN,
            json={"action": "settle", "reason": "confirmed by hand on the explorer"},
        )
        assert settled.status_code == 200, settled.text
        assert settled.json()["from_state"] == "observed"
        again = await http.post(
            f"/x402/admin/payments/{stuck}/mark",
            headers=ADMIN,
            json={"action": "settle", "reason": "x"},
        )
        assert again.status_code == 409
        killed = await http.post(
            f"/x402/admin/payments/{bought['payment_id']}/mark",
            headers=ADMIN,
            json={"action": "invalidate", "reason": "chargeback fraud"},
        )
        assert killed.status_code == 200 and killed.json()["to_state"] == "not_ours"
        call = await http.get("/x402/example/paid", headers={"x-payment-token": bought["token"]})
        assert call.status_code == 402
        missing = await http.post(
            "/x402/admin/payments/999999/mark",
            headers=ADMIN,
            json={"action": "settle", "reason": "x"},
        )
        assert missing.status_code == 404
        stats = await http.get("/x402/admin/stats", headers=ADMIN)
        assert stats.status_code == 200
        base = next(r for r in stats.json()["last_24h"] if r["chain"] == "base")
        assert base["payments_credited"] == 1 and base["amount_credited"] == "2000000"
        first = await http.post("/x402/cleanup", headers=ADMIN)
        assert first.status_code == 200
        assert first.json() == {"invoices_expired": 0, "idempotency_keys_forgotten": 0}
        second = await http.post("/x402/cleanup", headers=ADMIN)
        assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
    audit = await pool.fetch("SELECT action, payment_id, from_state, to_state FROM admin_audit")
    assert [tuple(r.values()) for r in audit] == [
        ("settle", stuck, "observed", "credited"),
        ("invalidate", bought["payment_id"], "claimed", "not_ours"),
    ]
    assert await pool.fetchval("SELECT state FROM payments WHERE id = $1", stuck) == "credited"


async def test_rate_limit_is_per_client_and_shared(pool: db.Pool) -> None:
    await fresh_rate_window()
    body = {"chain": "base", "tx_hash": "0x" + "11" * 32}
    async with client(app_for(pool)) as one, client(app_for(pool)) as other_process:
        codes = [(await one.post("/x402/verify-payment", json=body)).status_code for _ in range(3)]
        codes += [
            (await other_process.post("/x402/verify-payment", json=body)).status_code
            for _ in range(3)
        ]
        assert codes == [200] * 5 + [429]
        limited = await other_process.post("/x402/verify-payment", json=body)
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        assert_error_shape(limited.json(), "rate_limited")
    async with client(app_for(pool), host="10.0.0.7") as elsewhere:
        assert (await elsewhere.post("/x402/verify-payment", json=body)).status_code == 200


async def test_bad_input_is_a_json_4xx(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        bad_json = await http.post(
            "/x402/verify-payment",
            content=b'{"chain": "base", "tx_hash": ',
            headers={"content-type": "application/json"},
        )
        assert bad_json.status_code == 400
        assert_error_shape(bad_json.json(), "malformed_json")
        chain = await http.post("/x402/verify-payment", json={"chain": "dogecoin", "tx_hash": "0x"})
        assert chain.status_code == 422
        assert_error_shape(chain.json(), "invalid_request")
        assert chain.json()["fields"][0]["field"] == "chain"
        short = await http.post("/x402/verify-payment", json={"chain": "base", "tx_hash": "0x1234"})
        assert short.status_code == 400
        assert_error_shape(short.json(), "malformed_tx_hash")
        big = await http.post("/x402/generate-token", content=b"{" + b" " * 20_000 + b"}")
        assert big.status_code == 413
        assert_error_shape(big.json(), "body_too_large")

        async def chunks():  # no Content-Length: the limit still holds while streaming
            for _ in range(40):
                yield b" " * 1024

        streamed = await http.post(
            "/x402/generate-token", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert_error_shape(streamed.json(), "body_too_large")
        nowhere = await http.get("/x402/nowhere")
        assert nowhere.status_code == 404
        assert_error_shape(nowhere.json(), "not_found")
        sol = await http.post("/x402/verify-payment", json={"chain": "solana", "tx_hash": "0OIl"})
        assert sol.status_code == 400


async def test_public_info(pool: db.Pool) -> None:
    async with client(app_for(pool, stripe_price_id_pro="price_123")) as http:
        pricing = (await http.get("/x402/pricing")).json()
        assert pricing["price_per_call"] == "100000" and pricing["requests_per_dollar"] == 10
        assert pricing["minimum_payment_usd"] == "0.10"
        assert pricing["token_lifetime_hours"] == 24
        assert [t["available"] for t in pricing["stripe_tiers"]] == [True, False, False]
        await pool.execute("INSERT INTO cursors (chain, num, head) VALUES ('base', 10, 16)")
        chains = {
            c["chain"]: c for c in (await http.get("/x402/supported-chains")).json()["chains"]
        }
        assert chains["base"]["follower_healthy"] is True and chains["base"]["head"] == 16
        assert chains["ethereum"]["follower_healthy"] is False
        assert (
            chains["solana"]["commitment"] == "finalized" and chains["base"]["confirmations"] == 6
        )
