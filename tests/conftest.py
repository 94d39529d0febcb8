"""Shared fixtures: a real PostgreSQL (one migrated template, a clone per test) and anvil."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.anvil import Anvil, Token, deploy_token, start_anvil
from tests.pg import SessionPostgres
from watcher import db


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPostgres]:
    pg = SessionPostgres(tmp_path_factory.mktemp("pg"))
    asyncio.run(pg.create_template())
    try:
        yield pg
    finally:
        asyncio.run(pg.drop_template())
        pg.stop()


@pytest.fixture
async def database_url(postgres: SessionPostgres) -> AsyncIterator[str]:
    """A DSN to a fresh, migrated database of its own."""
    dsn = await postgres.clone()
    try:
        yield dsn
    finally:
        await postgres.drop(dsn)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[db.Pool]:
    p = await db.create_pool(database_url, min_size=1, max_size=20)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil()
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture
async def usdc(anvil: Anvil) -> Token:
    """The stand-in USDC on anvil, with 1,000,000 USDC minted to each of the first 5 accounts."""
    token = await deploy_token(anvil)
    for acct in anvil.accounts[:5]:
        await token.mint(acct, 1_000_000 * 10**6)
    return token
