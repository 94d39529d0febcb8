"""Migration 0017 on a database that already holds money: every value kept, the family
filled in, the registry's other networks added, and a family the registry denies refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import pytest

from devkit.pg import SessionPostgres
from watcher import db, errors, networks

EVM_HASH = "0x" + "ab" * 32
EVM_ADDR = "0x" + "11" * 20
SOL_SIG = "5" * 88
SOL_OWNER = "9" * 44


async def _before_0017(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """The schema as it was before the networks table, with rows on every old network."""
    for mig in db.list_migrations():
        if mig.version < "0017":
            shutil.copy(mig.path, tmp_path / mig.path.name)
    await db.migrate(conn, tmp_path)
    assert await conn.fetchval("SELECT to_regclass('networks')") is None
    await conn.execute(
        "INSERT INTO payments (chain, tx_hash, log_index, block_number, token, to_address,"
        " amount, state, credited_at) VALUES ('base', $1, 0, 1, $2, $2, 2500000, 'credited',"
        " now()), ('solana', $3, 2, 7, 'EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v', $4,"
        " 900000, 'observed', NULL)",
        EVM_HASH,
        EVM_ADDR,
        SOL_SIG,
        SOL_OWNER,
    )
    await conn.execute(
        "INSERT INTO cursors (chain, stream, num, hash) VALUES ('ethereum', 'logs', 5, $1)",
        EVM_HASH,
    )
    await conn.execute(
        "INSERT INTO solana_account_owners (token_account, owner, slot, signature)"
        " VALUES ($1, $2, 7, $3)",
        SOL_OWNER,
        SOL_OWNER,
        SOL_SIG,
    )


async def test_existing_rows_migrate_untouched_and_get_their_family(
    postgres: SessionPostgres, tmp_path: Path
) -> None:
    dsn = await postgres.create_empty()
    conn = await asyncpg.connect(dsn)
    try:
        await _before_0017(conn, tmp_path)
        before = [dict(r) for r in await conn.fetch("SELECT * FROM payments ORDER BY id")]
        applied = await db.migrate(conn)  # 0017, then whatever came after it
        assert applied[0] == "0017" and all(v > "0017" for v in applied[1:])

        after = [dict(r) for r in await conn.fetch("SELECT * FROM payments ORDER BY id")]
        # The columns the rows had keep their values (later migrations add columns of their own).
        assert [{k: r[k] for k in b} for r, b in zip(after, before, strict=True)] == before
        assert [(r["chain"], r["family"]) for r in after] == [("base", "evm"), ("solana", "solana")]
        stored = {r["name"]: r["family"] for r in await conn.fetch("SELECT * FROM networks")}
        assert stored == {n.name: n.family for n in networks.NETWORKS.values()}
        owners = await conn.fetch("SELECT chain, token_account FROM solana_account_owners")
        assert [(r["chain"], r["token_account"]) for r in owners] == [("solana", SOL_OWNER)]
        assert await conn.fetchval("SELECT num FROM cursors WHERE chain = 'ethereum'") == 5

        # The shape checks read the family: an EVM network's hash must still be normalised,
        # on a network added by the registry too, and an unknown network is refused.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO payments (chain, tx_hash, log_index, block_number, token,"
                " to_address, amount) VALUES ('polygon', $1, 0, 1, $2, $2, 1)",
                EVM_HASH.upper().replace("0X", "0x"),
                EVM_ADDR,
            )
        with pytest.raises(asyncpg.PostgresError):
            await conn.execute(
                "INSERT INTO payments (chain, tx_hash, log_index, block_number, token,"
                " to_address, amount) VALUES ('dogecoin', $1, 0, 1, $2, $2, 1)",
                EVM_HASH,
                EVM_ADDR,
            )
    finally:
        await conn.close()
        await postgres.drop(dsn)


async def test_a_family_the_registry_denies_stops_the_start(postgres: SessionPostgres) -> None:
    dsn = await postgres.create_empty()
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
        # Someone edited the table by hand: arbitrum is no Solana cluster.
        await conn.execute("UPDATE networks SET family = 'solana' WHERE name = 'arbitrum'")
        with pytest.raises(errors.MigrationError, match="arbitrum"):
            await db.migrate(conn)
    finally:
        await conn.close()
        await postgres.drop(dsn)
