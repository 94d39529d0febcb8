"""Backup and restore of the ledger, as docs/operations.md tells operators to do it:
pg_dump -Fc with the pg_dump bundled in the pgserver wheel, pg_restore into an empty database."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncpg
import pgserver

from devkit.pg import SessionPostgres
from watcher import db, ledger

PG_BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"


async def _ledger_figures(dsn: str) -> dict[str, object]:
    """Row count of every table, and the credited total: what a restore must bring back."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        out: dict[str, object] = {
            t: await conn.fetchval(f'SELECT count(*) FROM "{t}"') for t in tables
        }
        out["credited_units"] = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM payments WHERE state = 'credited'"
        )
        out["pending_migrations"] = await db.pending_migrations(conn)
    finally:
        await conn.close()
    return out


async def _fill(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            rows = await ledger.record(
                conn,
                [
                    ledger.Transfer(
                        chain="base",
                        tx_hash="0x" + f"{i:064x}",
                        log_index=i,
                        block_number=100 + i,
                        block_hash="0x" + f"{1000 + i:064x}",
                        token="0x833589fcd6edb6e08f4c7c32d4f71b54bda02913",
                        to_address="0x" + "22" * 20,
                        amount=1_000_000 * (i + 1),
                    )
                    for i in range(5)
                ],
            )
            await ledger.credit(conn, [r["id"] for r in rows[:3]])
            await ledger.set_cursor(conn, "base", 104, "0x" + f"{1004:064x}", head=110)
    finally:
        await conn.close()


async def test_pg_dump_and_pg_restore_bring_the_ledger_back(
    tmp_path: Path, database_url: str, postgres: SessionPostgres
) -> None:
    await _fill(database_url)
    before = await _ledger_figures(database_url)
    assert before["payments"] == 5 and before["credited_units"] == 6_000_000
    dump = tmp_path / "ledger.dump"
    subprocess.run(
        [str(PG_BIN / "pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={database_url}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert dump.stat().st_size > 0
    fresh = await postgres.create_empty()
    try:
        subprocess.run(
            [
                str(PG_BIN / "pg_restore"),
                "--no-owner",
                "--exit-on-error",
                f"--dbname={fresh}",
                str(dump),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        after = await _ledger_figures(fresh)
    finally:
        await postgres.drop(fresh)
    assert after == before
    assert after["pending_migrations"] == []
