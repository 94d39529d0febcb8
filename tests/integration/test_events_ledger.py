"""The ledger's events: written by the transition's own transaction, the resource as it now is."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any

import pytest

from tests.integration.test_ledger import ADDR, TOKEN, transfer
from watcher import db, events, ledger

# The ledger tests' transfer (base chain, 1 USDC from 0xcc.. to 0xaa..).
PAYER = "0x" + "cc" * 20


async def _events(conn: db.Connection) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await conn.fetch("SELECT type, resource_id, data FROM events ORDER BY id")
    return [(r["type"], r["resource_id"], json.loads(r["data"])) for r in rows]


async def test_observe_then_credit_writes_two_events_with_the_row_as_it_is(pool: db.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(1)])
        await ledger.record(conn, [transfer(1)])  # replay: no second observed event
        await ledger.credit(conn, [row["id"]])
        await ledger.credit(conn, [row["id"]])  # replay: nothing
    async with pool.acquire() as conn:
        got = await _events(conn)
    assert [(t, rid) for t, rid, _ in got] == [
        ("payment.observed", str(row["id"])),
        ("payment.credited", str(row["id"])),
    ]
    observed, credited = got[0][2], got[1][2]
    assert observed["state"] == "observed" and observed["credited_at"] is None
    assert credited["state"] == "credited" and credited["credited_at"] is not None
    assert credited["amount"] == "1000000" and credited["from"] == PAYER
    assert credited["object"] == "payment" and credited["tx_hash"] == transfer(1).tx_hash


async def test_a_backfill_written_as_credited_emits_only_credited(pool: db.Pool) -> None:
    rows = [transfer(i) for i in range(5)]
    async with pool.acquire() as conn, conn.transaction():
        await ledger.record_credited(conn, rows)
        await ledger.record_credited(conn, rows)  # replay
    async with pool.acquire() as conn:
        got = await _events(conn)
    assert [t for t, _, _ in got] == ["payment.credited"] * 5


async def test_a_rolled_back_step_leaves_neither_the_change_nor_its_event(pool: db.Pool) -> None:
    class Boom(Exception):
        pass

    async with pool.acquire() as conn:
        with pytest.raises(Boom):
            async with conn.transaction():
                rows = await ledger.record(conn, [transfer(1)])
                await ledger.credit(conn, [r["id"] for r in rows])
                assert await conn.fetchval("SELECT count(*) FROM events") == 2
                raise Boom
        assert await conn.fetchval("SELECT count(*) FROM payments") == 0
        assert await conn.fetchval("SELECT count(*) FROM events") == 0


async def test_orphan_reorg_reland_and_invalidate_each_write_their_event(pool: db.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        a, b = await ledger.record(conn, [transfer(1), transfer(2)])
        await ledger.orphan(conn, [a["id"]], "block reorged out")
        await ledger.credit(conn, [b["id"]])
        await ledger.flag_reorged_credits(conn, [b["id"]], "reorged after credit")
        # Seen again elsewhere, then confirmed there: relanded.
        await ledger.record(conn, [transfer(2, block_number=40, block_hash="0x" + "ee" * 32)])
        await ledger.clear_reorg_flags(conn, [b["id"]])
        await ledger.admin_invalidate(conn, b["id"], "refunded by hand")
    async with pool.acquire() as conn:
        got = await _events(conn)
    kinds = [(t, int(rid)) for t, rid, _ in got]
    assert kinds == [
        ("payment.observed", a["id"]),
        ("payment.observed", b["id"]),
        ("payment.orphaned", a["id"]),
        ("payment.credited", b["id"]),
        ("payment.reorged", b["id"]),
        ("payment.relanded", b["id"]),
        ("payment.invalidated", b["id"]),
    ]
    reorged = got[4][2]
    assert reorged["reorged_after_credit"] is True
    assert got[5][2]["reorged_after_credit"] is False and got[5][2]["block_number"] == 40
    assert got[6][2]["state"] == "not_ours"


async def test_an_invoice_credited_claimed_and_expired(pool: db.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        paid = await conn.fetchval(
            "INSERT INTO invoices (chain, pay_to, token, amount, requests, claim_secret_hash,"
            " created_at, expires_at) VALUES ('base', $1, $2, 1000000, 10, $3,"
            " now() - interval '1 minute', now() + interval '1 hour') RETURNING id",
            ADDR,
            TOKEN,
            b"\x01" * 32,
        )
        stale = await conn.fetchval(
            "INSERT INTO invoices (chain, pay_to, token, amount, requests, claim_secret_hash,"
            " created_at, expires_at) VALUES ('base', $1, $2, 2000000, 20, $3,"
            " now() - interval '5 hours', now() - interval '3 hours') RETURNING id",
            ADDR,
            TOKEN,
            b"\x02" * 32,
        )
        (row,) = await ledger.record(conn, [transfer(1, block_time=None)])
        await ledger.credit(conn, [row["id"]])
        token = await ledger.claim(
            conn,
            hashlib.sha256(b"t").digest(),
            row["id"],
            price=100_000,
            lifetime=timedelta(hours=24),
            max_requests=1000,
        )
        assert token is not None
        assert await ledger.expire_invoices(conn) == 1
    async with pool.acquire() as conn:
        got = await _events(conn)
    kinds = [(t, rid) for t, rid, _ in got]
    assert kinds == [
        ("payment.observed", str(row["id"])),
        ("invoice.paid", str(paid)),
        ("payment.credited", str(row["id"])),
        ("invoice.credited", str(paid)),
        ("payment.claimed", str(row["id"])),
        ("token.issued", str(token["id"])),
        ("invoice.claimed", str(paid)),
        ("invoice.expired", str(stale)),
    ]
    by_kind = {t: data for t, _, data in got}
    assert by_kind["payment.credited"]["invoice_id"] == str(paid)
    assert by_kind["invoice.credited"]["status"] == "credited"
    assert by_kind["invoice.credited"]["payment_id"] == str(row["id"])
    assert (
        by_kind["token.issued"]["remaining"] == 10 and "token_hash" not in by_kind["token.issued"]
    )
    assert by_kind["invoice.expired"]["status"] == "expired"


async def test_sequence_grows_per_resource_and_types_are_checked(pool: db.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(1)])
        await ledger.credit(conn, [row["id"]])
        with pytest.raises(ValueError, match="unknown event type"):
            await events.payments(conn, "payment.teleported", [row["id"]])
        with pytest.raises(ValueError, match="does not belong to resource"):
            await events.invoices(conn, "payment.credited", [])
        ids = await conn.fetch(
            "SELECT id FROM events WHERE resource_id = $1 ORDER BY id", str(row["id"])
        )
    assert [r["id"] for r in ids] == sorted(r["id"] for r in ids) and len(ids) == 2
    assert events.parse_public_id(events.public_id(ids[0]["id"])) == ids[0]["id"]
    assert (
        events.parse_public_id("evt_x1") is None
        and events.parse_public_id("evt_" + "9" * 30) is None
    )
