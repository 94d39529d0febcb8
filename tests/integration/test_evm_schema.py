"""0003: hashes and addresses on EVM payments obey exactly the spelling rules of 0001."""

from __future__ import annotations

import asyncpg
import pytest

from watcher import db

HASH = "0x" + "ab" * 32
ADDR = "0x" + "11" * 20

BAD_HASHES = [
    HASH.upper().replace("0X", "0x"),  # re-spelled in capitals
    HASH[:-1],  # too short
    HASH + "0",  # too long
    "0X" + HASH[2:],  # capital prefix
    "1x" + HASH[2:],
    HASH[:-1] + "g",  # not hex
    HASH[:-2] + "é",  # multibyte, same octet length
    HASH[:-1] + " ",
]
BAD_ADDRESSES = ["0x" + "AB" * 20, ADDR[:-1], ADDR + "1", ADDR[:-1] + "z", "0x"]


async def insert(conn: db.Connection, **over: object) -> None:
    row: dict[str, object] = {
        "chain": "base",
        "tx_hash": HASH,
        "log_index": 0,
        "block_number": 1,
        "token": ADDR,
        "to_address": ADDR,
        "amount": 1,
    }
    row.update(over)
    cols = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(f"INSERT INTO payments ({cols}) VALUES ({params})", *row.values())


@pytest.mark.parametrize("bad", BAD_HASHES)
async def test_malformed_hashes_are_refused(pool: db.Pool, bad: str) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="payments_evm_hash_normalised"):
            await insert(conn, tx_hash=bad)
        with pytest.raises(asyncpg.CheckViolationError, match="addresses_normalised"):
            await insert(conn, block_hash=bad)


@pytest.mark.parametrize("bad", BAD_ADDRESSES)
@pytest.mark.parametrize("column", ["token", "to_address", "from_address"])
async def test_malformed_addresses_are_refused(pool: db.Pool, column: str, bad: str) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError, match="addresses_normalised"):
            await insert(conn, **{column: bad})


async def test_well_formed_rows_and_solana_rows_pass(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await insert(conn, from_address="0x" + "0123456789abcdef" * 2 + "01234567")
        await insert(conn, log_index=1, block_hash="0x" + "f" * 64)
        sig = "5" * 88
        await insert(conn, chain="solana", tx_hash=sig, token="EPjF", to_address="B2v6")
        assert await conn.fetchval("SELECT count(*) FROM payments") == 3
