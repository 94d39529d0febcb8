"""A PostgreSQL for a test session (or a bench): DATABASE_URL if set, else an embedded pgserver.

One template database is migrated once per session; every test gets its own
database cloned from it (``CREATE DATABASE ... TEMPLATE``), which takes a few
milliseconds and isolates tests completely.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from watcher import db


def with_database(dsn: str, name: str) -> str:
    """The same server, another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


class SessionPostgres:
    """The session's server and its migrated template."""

    def __init__(self, tmp: Path) -> None:
        self._embedded: db.EmbeddedPostgres | None = None
        if os.environ.get("DATABASE_URL"):
            self.admin_dsn = os.environ["DATABASE_URL"]
        else:
            self._embedded = db.EmbeddedPostgres(tmp)
            self.admin_dsn = self._embedded.start()
        suffix = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.template = f"watcher_template_{suffix}_{uuid.uuid4().hex[:8]}"

    async def create_template(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(self.admin_dsn, self.template))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    async def clone(self) -> str:
        """A fresh migrated database; returns its DSN."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def create_empty(self) -> str:
        """A database with no schema at all (for migration tests)."""
        name = f"e_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def drop_template(self) -> None:
        await self.drop(with_database(self.admin_dsn, self.template))

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
