"""A payment an x402 call consumed (served at settlement: claimed, no token) bought what
it paid for: a refund gives back only what bought nothing (the part below one call),
never the price of the call that was served (the refund ledger on PostgreSQL)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.integration.test_x402_ledger import PAYER, PRICE, authorization, transfer
from watcher import db, ledger
from watcher.refunds import model, store


async def served_payment(pool: db.Pool, amount: int) -> int:
    tx = "0x" + "ab" * 32
    await authorization(pool, "settled", tx)  # the call was served at settlement
    t = dataclasses.replace(transfer(tx), amount=amount)
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [t])
        await ledger.credit(conn, [row["id"]])
    state = await pool.fetchval("SELECT state FROM payments WHERE id = $1", row["id"])
    assert state == "claimed"  # the call consumed it
    return int(row["id"])


def ask(pid: int, kind: str) -> store.Ask:
    return store.Ask(
        payment_id=pid,
        kind=kind,
        reason="asked",
        operator="alice",
        refund_key=store.new_key(),
        destination=PAYER,
        proof="source",
        price=PRICE,
    )


async def test_a_served_x402_payment_is_not_refunded_whole(pool: db.Pool) -> None:
    pid = await served_payment(pool, PRICE)
    async with pool.acquire() as conn:
        with pytest.raises(model.Refused) as refused:
            await store.create(conn, ask(pid, "whole"))
    assert refused.value.code == "nothing_refundable"
    assert await pool.fetchval("SELECT count(*) FROM refunds") == 0


async def test_a_payment_whose_x402_call_is_being_served_is_not_refunded(pool: db.Pool) -> None:
    tx = "0x" + "cd" * 32
    await authorization(pool, "settling", tx)  # settled on chain, the call not served yet
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(tx)])
        await ledger.credit(conn, [row["id"]])
    pid = int(row["id"])
    assert await pool.fetchval("SELECT state FROM payments WHERE id = $1", pid) == "credited"
    async with pool.acquire() as conn:
        with pytest.raises(model.Refused) as refused:
            await store.create(conn, ask(pid, "whole"))
    assert refused.value.code == "nothing_refundable"
