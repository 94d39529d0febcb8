"""The schema: migrations are safe to repeat and to race, and integrity lives in the database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from devkit.pg import SessionPostgres
from watcher import db, errors, networks

HASH = "0x" + "ab" * 32
ADDR = "0x" + "11" * 20


async def insert_payment(conn: asyncpg.Connection, **over: object) -> None:
    row = {
        "chain": "base",
        "tx_hash": HASH,
        "log_index": 0,
        "block_number": 1,
        "token": ADDR,
        "to_address": ADDR,
        "amount": 1_000_000,
    }
    row.update(over)
    cols = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(f"INSERT INTO payments ({cols}) VALUES ({params})", *row.values())


async def test_migrations_apply_twice(postgres: SessionPostgres) -> None:
    dsn = await postgres.create_empty()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            first = await db.migrate(conn)
            second = await db.migrate(conn)
            assert first == [m.version for m in db.list_migrations()]
            assert second == []
            assert await db.pending_migrations(conn) == []
        finally:
            await conn.close()
    finally:
        await postgres.drop(dsn)


async def test_migrations_race_from_two_processes(
    postgres: SessionPostgres, tmp_path: Path
) -> None:
    dsn = await postgres.create_empty()
    env = {**os.environ, "DATABASE_URL": dsn, "WATCHER_DATA_DIR": str(tmp_path)}
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "watcher",
                "migrate",
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
        for p, (out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err.decode()
            assert b"up to date" in out
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            assert [r["version"] for r in rows] == [m.version for m in db.list_migrations()]
        finally:
            await conn.close()
    finally:
        await postgres.drop(dsn)


async def test_edited_migration_is_refused(postgres: SessionPostgres, tmp_path: Path) -> None:
    dsn = await postgres.create_empty()
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    conn = await asyncpg.connect(dsn)
    try:
        assert await db.migrate(conn, tmp_path) == ["0001"]
        (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
        with pytest.raises(errors.MigrationError, match="changed after it was applied"):
            await db.migrate(conn, tmp_path)
    finally:
        await conn.close()
        await postgres.drop(dsn)


async def test_failed_migration_leaves_nothing_half_applied(
    postgres: SessionPostgres, tmp_path: Path
) -> None:
    dsn = await postgres.create_empty()
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (x int); SELECT no_such_fn();")
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(errors.MigrationError, match=r"0002_bad\.sql failed"):
            await db.migrate(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT to_regclass('ok')") == "ok"
        assert [
            r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
        ] == ["0001"]
    finally:
        await conn.close()
        await postgres.drop(dsn)


async def test_respelled_hash_cannot_make_a_second_row(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_payment(conn)
        with pytest.raises(asyncpg.CheckViolationError, match="payments_evm_hash_normalised"):
            await insert_payment(conn, tx_hash=HASH.upper().replace("0X", "0x"))
        with pytest.raises(asyncpg.UniqueViolationError):
            await insert_payment(conn)
        assert await conn.fetchval("SELECT count(*) FROM payments") == 1


async def test_same_tx_other_log_index_is_another_payment(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_payment(conn, log_index=0)
        await insert_payment(conn, log_index=1)
        assert await conn.fetchval("SELECT count(*) FROM payments") == 2


@pytest.mark.parametrize("amount", [0, -5])
async def test_amount_must_be_positive(pool: db.Pool, amount: int) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await insert_payment(conn, amount=amount)


async def test_fractional_amount_is_refused_not_rounded(pool: db.Pool) -> None:
    from decimal import Decimal

    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await insert_payment(conn, amount=Decimal("1.5"))


async def test_amount_beyond_uint256_range_fits(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await insert_payment(conn, amount=2**256 - 1)
        assert await conn.fetchval("SELECT amount FROM payments") == 2**256 - 1


async def test_remaining_requests_never_negative(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        tid = await conn.fetchval(
            "INSERT INTO access_tokens (token_hash, requests_total, remaining, expires_at)"
            " VALUES ($1, 10, 1, now() + interval '1 day') RETURNING id",
            b"\x01" * 32,
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE access_tokens SET remaining = remaining - 2 WHERE id = $1", tid
            )
        assert await conn.fetchval("SELECT remaining FROM access_tokens WHERE id = $1", tid) == 1


async def test_reporting_objects_answer(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO payments (chain, tx_hash, log_index, block_number, token, from_address,"
            " to_address, amount, state, credited_at) VALUES ('base', $1, 0, 1, $2, $3, $2,"
            " 2500000, 'credited', now())",
            HASH,
            ADDR,
            "0x" + "22" * 20,
        )
        stats = {r["chain"]: r for r in await conn.fetch("SELECT * FROM v_x402_stats_24h")}
        assert set(stats) == set(networks.NAMES)  # one row per registry network
        assert stats["base"]["payments_credited"] == 1
        assert stats["base"]["amount_credited"] == 2_500_000
        top = await conn.fetch("SELECT * FROM v_x402_top_payers")
        assert [(r["payer"], r["amount_total"]) for r in top] == [("0x" + "22" * 20, 2_500_000)]
        assert await conn.fetch("SELECT * FROM v_x402_active_payments") == []
        assert await conn.fetch("SELECT * FROM v_x402_endpoint_stats") == []
        written = await conn.fetchval("SELECT update_x402_analytics()")
        assert written == 2 * len(networks.NAMES)  # 2 days x every network
        assert (
            await conn.fetchval(
                "SELECT amount FROM x402_analytics WHERE chain = 'base' AND day = current_date"
            )
            == 2_500_000
        )
        await conn.execute(
            "INSERT INTO invoices (chain, pay_to, token, amount, requests, claim_secret_hash,"
            " created_at, expires_at) VALUES ('base', $1, $1, 1000001, 10, $2,"
            " now() - interval '3 hours', now() - interval '2 hours')",
            ADDR,
            b"\x02" * 32,
        )
        assert await conn.fetchval("SELECT cleanup_expired_x402_payments()") == 1
        assert await conn.fetchval("SELECT status FROM invoices") == "expired"
