"""Ledger writes: idempotent under replay, state guards hold, cursor moves with the step."""

from __future__ import annotations

import dataclasses
from typing import Any

from watcher import db, ledger

ADDR = "0x" + "aa" * 20
TOKEN = "0x" + "bb" * 20


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
        from_address="0x" + "cc" * 20,
    )
    return dataclasses.replace(t, **over)


async def test_record_is_idempotent_and_credit_happens_once(pool: db.Pool) -> None:
    rows = [transfer(i) for i in range(3)]
    async with pool.acquire() as conn, conn.transaction():
        inserted = await ledger.record(conn, rows)
        assert len(inserted) == 3
        assert await ledger.record(conn, rows) == []  # replay: nothing new
        ids = [r["id"] for r in inserted]
        assert len(await ledger.credit(conn, ids)) == 3
        assert await ledger.credit(conn, ids) == []  # second credit: nothing
        assert await ledger.orphan(conn, ids, "late reorg") == []  # credited rows are not orphaned
        await ledger.set_cursor(conn, "base", 42, "0xabc", head=50)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payments WHERE state = 'credited'") == 3
        cur = await ledger.get_cursor(conn, "base")
        assert cur == ledger.Cursor(42, "0xabc", 50)


async def test_orphaned_transfer_revives_in_its_new_block(pool: db.Pool) -> None:
    t = transfer(1)
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [t])
        await ledger.orphan(conn, [row["id"]], "block reorged out")
        moved = transfer(1, block_number=12, block_hash="0x" + "ee" * 32)
        (again,) = await ledger.record(conn, [moved])
        assert again["id"] == row["id"] and again["state"] == "observed"
        got = await conn.fetchrow("SELECT block_number, block_hash, orphaned_at FROM payments")
        assert (got["block_number"], got["block_hash"], got["orphaned_at"]) == (
            12,
            "0x" + "ee" * 32,
            None,
        )


async def test_rolled_back_step_leaves_nothing(pool: db.Pool) -> None:
    class Boom(Exception):
        pass

    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await ledger.record(conn, [transfer(1)])
                await ledger.set_cursor(conn, "base", 99, None)
                raise Boom
        except Boom:
            pass
        assert await conn.fetchval("SELECT count(*) FROM payments") == 0
        assert await ledger.get_cursor(conn, "base") is None


async def test_reference_keys_and_memo_are_kept(pool: db.Pool) -> None:
    sol = ledger.Transfer(
        chain="solana",
        tx_hash="5" * 88,
        log_index=2,
        block_number=7,
        block_hash=None,
        token="EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v",
        to_address="B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M",
        amount=3_800_000,
        memo="order 7",
        reference_keys=("Ref1", "Ref2"),
    )
    async with pool.acquire() as conn:
        await ledger.record(conn, [sol])
        got = await conn.fetchrow("SELECT memo, reference_keys FROM payments")
        assert got["memo"] == "order 7" and got["reference_keys"] == ["Ref1", "Ref2"]


async def test_sessions_stay_in_utc_after_the_pool_resets_them(pool: db.Pool) -> None:
    for _ in range(3):  # each release runs the pool's reset; the next acquire must still be UTC
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW TimeZone") == "UTC"
            await conn.execute("SET TIME ZONE 'Asia/Tokyo'")
