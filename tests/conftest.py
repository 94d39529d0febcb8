"""Shared fixtures: a real PostgreSQL (one migrated template, a clone per test) and anvil."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devkit.anvil import Anvil, Token, deploy_token, start_anvil
from devkit.pg import SessionPostgres
from watcher import db

_OWN_BASETEMP = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Give this run a temp root of its own.

    pytest's default root (``/tmp/pytest-of-<user>``) is shared by every run on
    the machine and keeps only the three newest ``pytest-N`` folders: a second
    suite started meanwhile deletes the session PostgreSQL of a running one.
    A fresh directory per run (unless ``--basetemp`` was given) cannot be
    reclaimed by anybody else; it is removed when the run ends.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        root = Path(tempfile.mkdtemp(prefix=f"watcher-tests-{os.getpid()}-"))
        config.option.basetemp = str(root)
        config.stash[_OWN_BASETEMP] = root


def pytest_unconfigure(config: pytest.Config) -> None:
    root = config.stash.get(_OWN_BASETEMP, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


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
