"""x402_settlement.* events: written in the transaction that moves a settlement's status
(the API settling or failing it, the ledger orphaning, flagging or re-crediting its
payment), once per change, with the row as it is after the change."""

from __future__ import annotations

import dataclasses
import json
import secrets
from typing import Any

from solders.keypair import Keypair

from api.x402 import records, svm_settle
from tests.integration.test_x402_ledger import auth_row, authorization, credit, transfer
from watcher import db, ledger

TYPES = ("x402_settlement.settled", "x402_settlement.failed", "x402_settlement.reorged")


async def settlement_events(pool: db.Pool) -> list[tuple[str, str, dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT type, resource_id, data FROM events WHERE resource = 'x402_settlement' ORDER BY id"
    )
    return [(r["type"], r["resource_id"], json.loads(r["data"])) for r in rows]


async def test_settled_once_with_the_row_as_it_is(pool: db.Pool) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settled", tx)
    ((etype, rid, data),) = await settlement_events(pool)
    assert (etype, rid) == ("x402_settlement.settled", f"evm-{auth_id}")
    row = await auth_row(pool, auth_id)
    assert data["status"] == "settled" and data["rail"] == "evm" and data["chain"] == "base"
    assert data["amount"] == "100000" and data["tx_hash"] == tx and data["payment_id"] is None
    assert data["payer"] == row["payer"] and data["resource"] == row["resource"]
    async with pool.acquire() as conn:  # a replay of the settled mark: no row, no event
        assert await ledger_settled(conn, auth_id, tx) is False
    await credit(pool, tx)  # linked and consumed: not a status change
    assert len(await settlement_events(pool)) == 1


async def ledger_settled(conn: db.Connection, auth_id: int, tx: str) -> bool:
    from api.x402 import evm_settle

    return await evm_settle.mark_settled(conn, auth_id, tx)


async def test_failed_once_and_a_replay_writes_nothing(pool: db.Pool) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settling", tx)
    rail = "x402_authorizations"
    assert await records.mark_failed(pool, rail, "x402_mark_failed", auth_id, "reverted")
    assert not await records.mark_failed(pool, rail, "x402_mark_failed", auth_id, "again")
    ((etype, rid, data),) = await settlement_events(pool)
    assert (etype, rid) == ("x402_settlement.failed", f"evm-{auth_id}")
    assert data["status"] == "failed" and data["error"] == "reverted"


async def test_a_settlement_that_must_not_be_served_rolls_back_with_no_event(
    pool: db.Pool,
) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settling", tx)
    payment = await credit(pool, tx)
    await pool.execute("UPDATE payments SET state = 'claimed' WHERE id = $1", payment["id"])
    async with pool.acquire() as conn:
        assert await ledger_settled(conn, auth_id, tx) is False
    assert (await auth_row(pool, auth_id))["status"] == "settling"
    assert await settlement_events(pool) == []


async def test_orphaned_then_credited_again_writes_reorged_then_settled(pool: db.Pool) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settled", tx)
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(tx)])
    # Rolled back: neither the status nor the event.
    async with pool.acquire() as conn:
        tx_ = conn.transaction()
        await tx_.start()
        await ledger.orphan(conn, [row["id"]], "block gone")
        assert (await conn.fetchval(db.q("x402_authorization"), auth_id)) is not None
        await tx_.rollback()
    assert (await auth_row(pool, auth_id))["status"] == "settled"
    assert [e[0] for e in await settlement_events(pool)] == ["x402_settlement.settled"]
    for _ in range(2):  # the second orphan finds nothing to move
        async with pool.acquire() as conn, conn.transaction():
            await ledger.orphan(conn, [row["id"]], "block gone")
    events = await settlement_events(pool)
    assert [e[0] for e in events] == ["x402_settlement.settled", "x402_settlement.reorged"]
    assert events[1][2]["status"] == "reorged" and "canonical chain" in events[1][2]["error"]
    # Re-included elsewhere and credited: settled again, now with its payment.
    again = dataclasses.replace(transfer(tx), block_number=11, block_hash="0x" + "02" * 32)
    async with pool.acquire() as conn, conn.transaction():
        (row2,) = await ledger.record(conn, [again])
        await ledger.credit(conn, [row2["id"]])
    events = await settlement_events(pool)
    assert [e[0] for e in events][-1] == "x402_settlement.settled" and len(events) == 3
    assert events[2][2]["payment_id"] == str(row2["id"]) and events[2][2]["error"] is None


async def test_flagged_after_credit_writes_reorged_and_relanded_writes_settled(
    pool: db.Pool,
) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settled", tx)
    payment = await credit(pool, tx)
    assert payment["state"] == "claimed"
    for _ in range(2):  # the replay flags nothing more
        async with pool.acquire() as conn, conn.transaction():
            await ledger.flag_reorged_credits(conn, [payment["id"]], "reorged out")
    assert (await auth_row(pool, auth_id))["status"] == "reorged"
    kinds = [e[0] for e in await settlement_events(pool)]
    assert kinds == ["x402_settlement.settled", "x402_settlement.reorged"]
    moved = dataclasses.replace(transfer(tx), block_number=12, block_hash="0x" + "03" * 32)
    async with pool.acquire() as conn, conn.transaction():
        await ledger.record(conn, [moved])  # seen at its new place: relanded_at
        await ledger.clear_reorg_flags(conn, [payment["id"]])
    assert (await auth_row(pool, auth_id))["status"] == "settled"
    events = await settlement_events(pool)
    assert [e[0] for e in events][-1] == "x402_settlement.settled" and len(events) == 3
    assert events[2][2]["status"] == "settled"


def _b58(n: int) -> str:
    assert n == 32
    return str(Keypair().pubkey())


async def svm_row(pool: db.Pool) -> int:
    sig = str(Keypair().sign_message(secrets.token_bytes(8)))
    args = (
        "solana:" + "1" * 32,
        _b58(32),
        _b58(32),
        _b58(32),
        _b58(32),
        _b58(32),
        100_000,
        secrets.token_hex(8),
        secrets.token_hex(32),
        sig,
        _b58(32),
        2,
        "http://t/paid",
    )
    row_id: int = await pool.fetchval(db.q("x402_svm_claim"), *args)
    return row_id


async def test_solana_settlements_write_their_events_with_an_svm_id(pool: db.Pool) -> None:
    served, refused = await svm_row(pool), await svm_row(pool)
    async with pool.acquire() as conn:
        assert await svm_settle.mark_settled(conn, served) is True
    rail = "x402_solana_settlements"
    assert await records.mark_failed(pool, rail, "x402_svm_mark_failed", refused, "no", True)
    assert not await records.mark_failed(pool, rail, "x402_svm_mark_failed", refused, "no", True)
    events = await settlement_events(pool)
    assert [(e[0], e[1]) for e in events] == [
        ("x402_settlement.settled", f"svm-{served}"),
        ("x402_settlement.failed", f"svm-{refused}"),
    ]
    assert events[0][2]["rail"] == "svm" and events[0][2]["chain"].startswith("solana:")
    assert all(e[0] in TYPES for e in events)
