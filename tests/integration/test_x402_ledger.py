"""The x402 authorization <-> payment link (migration 0008), at the ledger level: only a served
call consumes the payment; anything else leaves the payer's transfer claimable as usual."""

from __future__ import annotations

import secrets
from typing import Any

from api.x402 import evm_settle
from watcher import db, ledger

PAYER = "0x" + "cc" * 20
US = "0x" + "aa" * 20
TOKEN = "0x" + "bb" * 20
PRICE = 100_000


def transfer(tx_hash: str) -> ledger.Transfer:
    return ledger.Transfer(
        chain="base",
        tx_hash=tx_hash,
        log_index=0,
        block_number=10,
        block_hash="0x" + "01" * 32,
        token=TOKEN,
        to_address=US,
        amount=PRICE,
        from_address=PAYER,
    )


async def authorization(pool: db.Pool, status: str, tx_hash: str) -> int:
    auth_id: int = await pool.fetchval(
        db.q("x402_claim_authorization"),
        "base",
        TOKEN,
        PAYER,
        US,
        PRICE,
        "0x" + secrets.token_hex(32),
        0,
        2**40,
        "0x" + "11" * 65,
        2,
        "http://testserver/x402/example/paid",
        "relayer",
    )
    await pool.execute(db.q("x402_mark_settling"), auth_id, tx_hash)
    if status == "settled":
        assert await settled(pool, auth_id, tx_hash) is True
    elif status == "failed":
        await pool.execute(db.q("x402_mark_failed"), auth_id, "reverted")
    return auth_id


async def settled(pool: db.Pool, auth_id: int, tx_hash: str) -> bool:
    async with pool.acquire() as conn:
        return await evm_settle.mark_settled(conn, auth_id, tx_hash)


async def credit(pool: db.Pool, tx_hash: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [transfer(tx_hash)])
        await ledger.credit(conn, [row["id"]])
        return dict(await conn.fetchrow("SELECT * FROM payments WHERE id = $1", row["id"]))


async def auth_row(pool: db.Pool, auth_id: int) -> dict[str, Any]:
    return dict(await pool.fetchrow(db.q("x402_authorization"), auth_id))


async def test_a_served_settlement_consumes_its_payment_when_credited(pool: db.Pool) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settled", tx)
    payment = await credit(pool, tx)
    assert payment["state"] == "claimed" and f"authorization {auth_id}" in payment["reason"]
    assert (await auth_row(pool, auth_id))["payment_id"] == payment["id"]


async def test_credited_while_settling_is_linked_and_claimed_only_once_served(
    pool: db.Pool,
) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settling", tx)
    payment = await credit(pool, tx)  # the follower beat our receipt
    assert payment["state"] == "credited"  # not served yet: still the payer's to claim
    assert (await auth_row(pool, auth_id))["payment_id"] == payment["id"]
    assert await settled(pool, auth_id, tx) is True
    state = await pool.fetchval("SELECT state FROM payments WHERE id = $1", payment["id"])
    assert state == "claimed"


async def test_a_failed_settlement_mined_anyway_stays_the_payers_payment(pool: db.Pool) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "failed", tx)
    payment = await credit(pool, tx)
    assert payment["state"] == "credited"  # claimable with the payer's signature
    row = await auth_row(pool, auth_id)
    assert (row["status"], row["payment_id"]) == ("failed", None)
    assert await settled(pool, auth_id, tx) is False


async def test_one_nonce_one_row(pool: db.Pool) -> None:
    args = ("base", TOKEN, PAYER, US, PRICE, "0x" + "ab" * 32, 0, 2**40, "0x" + "11" * 65, 2)
    first = await pool.fetchval(db.q("x402_claim_authorization"), *args, "r", "relayer")
    second = await pool.fetchval(db.q("x402_claim_authorization"), *args, "r", "facilitator")
    assert first is not None and second is None


async def test_a_served_settlement_first_seen_already_deep_is_consumed_too(pool: db.Pool) -> None:
    # After downtime the EVM follower inserts deep transfers straight as credited.
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settled", tx)
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record_credited(conn, [transfer(tx)])
    payment = await pool.fetchrow("SELECT state, reason FROM payments WHERE id = $1", row["id"])
    assert payment["state"] == "claimed" and f"authorization {auth_id}" in payment["reason"]
    assert (await auth_row(pool, auth_id))["payment_id"] == row["id"]


async def test_a_payment_claimed_for_a_token_before_settling_is_never_also_served(
    pool: db.Pool,
) -> None:
    tx = "0x" + secrets.token_hex(32)
    auth_id = await authorization(pool, "settling", tx)
    payment = await credit(pool, tx)  # the follower beat our receipt; left credited
    await pool.execute("UPDATE payments SET state = 'claimed' WHERE id = $1", payment["id"])
    assert await settled(pool, auth_id, tx) is False  # the payer took a token instead
    row = await auth_row(pool, auth_id)
    assert row["status"] == "settling"  # rolled back; the API marks it failed, serves nothing
