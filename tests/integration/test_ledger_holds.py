"""Holds in the ledger (issue 16): screening at credit, release, reject, the guards."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from watcher import db, holds, ledger
from watcher.screening import core

ADDR = "0x" + "aa" * 20
TOKEN = "0x" + "bb" * 20
PAYER = "0x" + "cc" * 20
LISTED = "0x" + "dd" * 20


class Listed:
    """A tiny deny-list: the addresses given, named by one listing."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = set(addresses)

    def lookup(self, address: str) -> str | None:
        return "test list (entry 1)" if address in self.addresses else None


@pytest.fixture
def screen() -> Iterator[core.Screen]:
    s = core.Screen(denylist=Listed(LISTED))
    core.install(s)
    yield s
    core.install(core.Screen())


def transfer(i: int, **over: Any) -> ledger.Transfer:
    t = ledger.Transfer(
        chain="base",
        tx_hash="0x" + f"{i:064x}",
        log_index=0,
        block_number=10 + i,
        block_hash="0x" + f"{i + 1000:064x}",
        token=TOKEN,
        to_address=ADDR,
        amount=1_000_000,
        from_address=PAYER,
        tx_sender=PAYER,
        block_time=datetime.now(UTC) - timedelta(minutes=5),
    )
    return dataclasses.replace(t, **over)


async def _events(conn: db.Connection, pid: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT type FROM events WHERE resource = 'payment' AND resource_id = $1 ORDER BY id",
        str(pid),
    )
    return [r["type"] for r in rows]


async def _claim(conn: db.Connection, pid: int) -> Any:
    return await ledger.claim(
        conn, bytes(32), pid, price=100_000, lifetime=timedelta(hours=1), max_requests=10
    )


async def test_a_listed_sender_is_held_then_released_by_an_operator(
    pool: db.Pool, screen: core.Screen
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        rows = await ledger.record(conn, [transfer(1, tx_sender=LISTED), transfer(2)])
        credited = await ledger.credit(conn, [r["id"] for r in rows])
        assert [r["id"] for r in credited] == [rows[1]["id"]]
        held = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", rows[0]["id"])
        assert held["state"] == "held" and held["held_at"] is not None
        assert held["reason"] == f"tx_sender {LISTED} is on test list (entry 1)"
        risk = json.loads(held["risk"])
        assert risk["score"] == 100 and risk["rules"][0]["rule"] == "denylist"
        passed = await conn.fetchrow("SELECT risk FROM payments WHERE id = $1", rows[1]["id"])
        assert json.loads(passed["risk"]) == {
            "score": 0,
            "rules": [],
            "checked": ["denylist", "payment_age"],
        }
        assert await ledger.credit(conn, [held["id"]]) == []  # a held row is not credited
        assert await _claim(conn, held["id"]) is None  # nor claimable
        assert await ledger.admin_settle(conn, held["id"], "by hand") is None  # nor settled
        out = await ledger.release(conn, held["id"], "alice@example.com", "known customer")
        assert out is not None and out["state"] == "credited"
        assert await ledger.release(conn, held["id"], "bob", "again") is None  # once
        assert await ledger.reject(conn, held["id"], "bob", "too late") is None
        row = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", held["id"])
        assert (row["reviewed_by"], row["review_note"]) == ("alice@example.com", "known customer")
        audit = await conn.fetchrow("SELECT * FROM admin_audit WHERE payment_id = $1", held["id"])
        assert (audit["action"], audit["operator"], audit["from_state"], audit["to_state"]) == (
            "payment.release",
            "alice@example.com",
            "held",
            "credited",
        )
        assert await _claim(conn, held["id"]) is not None
        assert await _events(conn, held["id"]) == [
            "payment.observed",
            "payment.held",
            "payment.released",
            "payment.credited",
            "payment.claimed",
        ]


async def test_a_rejected_payment_is_never_claimable_and_is_flagged_on_a_reorg(
    pool: db.Pool, screen: core.Screen
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(1, from_address=LISTED)])
        assert await ledger.credit(conn, [row["id"]]) == []
        assert await ledger.reject(conn, row["id"], "alice", "listed sender") is not None
        assert await _claim(conn, row["id"]) is None
        assert await ledger.release(conn, row["id"], "alice", "changed my mind") is None
        assert await ledger.admin_settle(conn, row["id"], "by hand") is None
        flagged = await ledger.flag_reorged_credits(conn, [row["id"]], "reorged out")
        assert [r["id"] for r in flagged] == [row["id"]]
        state = await conn.fetchrow("SELECT state, reason FROM payments WHERE id = $1", row["id"])
        assert (state["state"], state["reason"]) == ("rejected", "reorged out")
        assert (await _events(conn, row["id"]))[-2:] == ["payment.rejected", "payment.reorged"]


async def test_the_backfill_path_holds_what_a_rule_fires_for(
    pool: db.Pool, screen: core.Screen
) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    async with pool.acquire() as conn, conn.transaction():
        got = await ledger.record_credited(
            conn,
            [
                transfer(1),
                transfer(2, tx_sender=LISTED),
                transfer(3, block_time=old),
                transfer(4, tx_sender=None),
            ],
        )
        assert len(got) == 1
        rows = await conn.fetch("SELECT tx_hash, state, reason FROM payments ORDER BY tx_hash")
        assert [r["state"] for r in rows] == ["credited", "held", "held", "held"]
        assert rows[2]["reason"].startswith("first seen 30 days after its block")
        assert rows[3]["reason"] == "the tx_sender address could not be learned to screen it"


async def test_a_held_payment_reorged_out_is_orphaned_and_screened_again(
    pool: db.Pool, screen: core.Screen
) -> None:
    t = transfer(1, tx_sender=LISTED)
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [t])
        await ledger.credit(conn, [row["id"]])
        assert [r["id"] for r in await ledger.orphan(conn, [row["id"]], "gone")] == [row["id"]]
        # Re-lands elsewhere, now sent by a clean sender: observed, then credited.
        moved = dataclasses.replace(t, block_number=99, block_hash="0x" + "ee" * 32, tx_sender=None)
        (again,) = await ledger.record(conn, [moved])
        assert again["state"] == "observed"
        core.install(core.Screen())  # the deny-list is gone by now
        assert [r["id"] for r in await ledger.credit(conn, [row["id"]])] == [row["id"]]


async def test_the_operator_settle_screens_and_never_credits_a_listed_payment(
    pool: db.Pool, screen: core.Screen
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(1, from_address=LISTED)])
        await ledger.orphan(conn, [row["id"]], "gone")
        out = await ledger.admin_settle(conn, row["id"], "settle by operator: paid")
        assert out is not None and out["state"] == "held"
        (ok,) = await ledger.record(conn, [transfer(2)])
        out = await ledger.admin_settle(conn, ok["id"], "settle by operator: paid")
        assert out is not None and out["state"] == "credited"


async def test_an_old_credited_payment_can_no_longer_be_claimed(pool: db.Pool) -> None:
    old = datetime.now(UTC) - timedelta(days=8)
    async with pool.acquire() as conn, conn.transaction():
        core.install(core.Screen(max_age=None))  # credited before the rule was on
        try:
            (row,) = await ledger.record(conn, [transfer(1, block_time=old)])
            assert len(await ledger.credit(conn, [row["id"]])) == 1
        finally:
            core.install(core.Screen())
        assert await _claim(conn, row["id"]) is None
        core.install(core.Screen(max_age=timedelta(days=30)))
        try:
            assert await _claim(conn, row["id"]) is not None
        finally:
            core.install(core.Screen())


async def test_the_held_gauge_counts_what_waits_for_review(
    pool: db.Pool, screen: core.Screen
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        rows = await ledger.record(conn, [transfer(i, tx_sender=LISTED) for i in (1, 2)])
        await ledger.credit(conn, [r["id"] for r in rows])
        await ledger.reject(conn, rows[0]["id"], "alice", "listed")
        assert await holds.refresh_gauge(conn) == 1
    assert REGISTRY.get_sample_value("watcher_payments_held", {"chain": "base"}) == 1
    assert REGISTRY.get_sample_value("watcher_payments_held", {"chain": "solana"}) == 0
    oldest = REGISTRY.get_sample_value("watcher_payments_held_oldest_seconds", {"chain": "base"})
    assert oldest is not None and 0 <= oldest < 60
