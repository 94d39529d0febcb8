"""What payers and operators see of a hold over the API (issue 16)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.api_support import ADMIN_KEY, app_for, client, record_payment
from watcher import db, ledger
from watcher.screening import core

LISTED = "0x" + "dd" * 20
ADMIN = {"x-admin-key": ADMIN_KEY, "x-admin-operator": "alice"}


class Listed:
    def lookup(self, address: str) -> str | None:
        return "the test list" if address == LISTED else None


@pytest.fixture(autouse=True)
def default_screen() -> Iterator[None]:
    yield
    core.install(core.Screen())


async def test_an_invoice_paid_by_a_held_payment_says_held_then_credited_on_release(
    pool: db.Pool,
) -> None:
    app = app_for(pool)
    core.install(core.Screen(denylist=Listed()))
    async with client(app) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 3})).json()
        url = f"/x402/invoices/{inv['invoice_id']}"
        pid, tx = await record_payment(
            pool, from_address=LISTED, amount=int(inv["amount"]), to_address=inv["pay_to"].lower()
        )
        status = (await http.get(url)).json()
        assert status["status"] == "held"
        assert status["payment"]["tx_hash"] == tx
        # record_payment learns no tx sender: that is a rule of its own.
        assert status["payment"]["reason"] == (
            f"from {LISTED} is on the test list; "
            "the tx_sender address could not be learned to screen it"
        )
        claim = {"invoice_id": inv["invoice_id"], "claim_secret": inv["claim_secret"]}
        assert (await http.post("/x402/generate-token", json=claim)).status_code == 409
        ok = await http.post(
            f"/x402/admin/payments/{pid}/release", json={"reason": "known"}, headers=ADMIN
        )
        assert ok.status_code == 200
        assert (await http.get(url)).json()["status"] == "credited"
        assert (await http.post("/x402/generate-token", json=claim)).status_code == 201


async def test_the_admin_settle_of_a_listed_payment_answers_held(pool: db.Pool) -> None:
    app = app_for(pool)
    core.install(core.Screen(denylist=Listed()))
    pid, _ = await record_payment(pool, from_address=LISTED, credit=False)
    async with pool.acquire() as conn, conn.transaction():
        await ledger.orphan(conn, [pid], "block reorged out")
    async with client(app) as http:
        mark = await http.post(
            f"/x402/admin/payments/{pid}/mark",
            json={"action": "settle", "reason": "seen on the explorer"},
            headers=ADMIN,
        )
        assert mark.status_code == 200, mark.text
        assert (mark.json()["from_state"], mark.json()["to_state"]) == ("orphaned", "held")
        assert "held for review" in mark.json()["held"]
        queue = (await http.get("/x402/admin/holds", headers=ADMIN)).json()["holds"]
        assert [(h["id"], h["state"], h["risk"]["score"]) for h in queue] == [(pid, "held", 100)]
        refused = await http.get("/x402/admin/holds", headers={"x-admin-key": "wrong"})
        assert refused.status_code == 403
    assert await pool.fetchval("SELECT state FROM payments WHERE id = $1", pid) == "held"
