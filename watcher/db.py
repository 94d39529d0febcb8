"""PostgreSQL: the connection pool, named queries, migrations, the embedded server.

* ``queries()`` parses the files of ``watcher/sql/`` once, as one namespace: every
  statement lives there under a ``-- name: x`` header, one file per domain (ledger,
  evm, solana, api, stripe, x402, ops). A name defined twice is refused at load.
* ``migrate()`` applies ``migrations/NNNN_*.sql`` in order, each in its own
  transaction, recorded with a checksum in ``schema_migrations``, under a
  Postgres advisory lock so processes starting together take turns. An applied
  file that was edited afterwards is refused: migrations are forward only.
* ``EmbeddedPostgres`` starts a private server from the ``pgserver`` wheel in
  the data directory when no ``DATABASE_URL`` is given, reuses it across
  restarts and stops it on exit (when the last process using it lets go).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
import os
import pwd
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import structlog

from watcher import errors, networks

log = structlog.get_logger(__name__)

# Read through importlib.resources, so the files are found in an installed wheel too.
QUERIES_DIR: Traversable = importlib.resources.files("watcher") / "sql"


def _migrations_dir() -> Path:
    # A wheel carries them inside the package (setup.py copies them there at build time); a
    # checkout or an editable install reads migrations/ beside the package, where they live.
    here = Path(__file__).resolve().parent
    packaged = here / "migrations"
    return packaged if packaged.is_dir() else here.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()
# Arbitrary but fixed: the advisory lock every migrating process takes.
MIGRATION_LOCK_KEY = 0x5553_4443_4D49_4752  # "USDCMIGR"

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Pool = asyncpg.Pool

# What a lost, restarting or failing-over database (or a session killed under us) raises.
# A step that meets one rolled back whole: the followers retry it instead of crashing.
# InternalClientError is what asyncpg raises on a pooled connection killed mid-operation.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

# A plain connection or one borrowed from the pool: both run the same queries.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


def parse_queries(text: str, source: str = "<text>") -> dict[str, str]:
    """Split one named-query file into ``{name: sql}``; a repeated or empty one is an error."""
    out: dict[str, str] = {}
    parts = _NAME.split(text)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise errors.QueryFileError(f"query {name!r} defined twice in {source}")
        sql = body.strip()
        if not sql:
            raise errors.QueryFileError(f"query {name!r} in {source} is empty")
        out[name] = sql
    return out


def load_queries(directory: Traversable) -> dict[str, str]:
    """Every ``*.sql`` file of ``directory`` as one namespace of named statements.

    A name defined in two files is refused (QueryFileError naming it and both files):
    callers say ``q(name)`` without a file, so two definitions would be a silent pick.
    """
    out: dict[str, str] = {}
    where: dict[str, str] = {}
    files = sorted((f for f in directory.iterdir() if f.name.endswith(".sql")), key=_file_name)
    if not files:
        raise errors.QueryFileError(f"no named-query files (*.sql) in {directory}")
    for file in files:
        for name, sql in parse_queries(file.read_text(encoding="utf-8"), file.name).items():
            if name in out:
                raise errors.QueryFileError(
                    f"query {name!r} defined twice: in {where[name]} and in {file.name}"
                )
            out[name] = sql
            where[name] = file.name
    return out


def _file_name(file: Traversable) -> str:
    return file.name


@functools.cache
def queries() -> Mapping[str, str]:
    """The named statements of ``watcher/sql/*.sql``, read once."""
    return load_queries(QUERIES_DIR)


def q(name: str) -> str:
    """One named statement (KeyError names the missing query)."""
    return queries()[name]


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; a malformed or repeated number is an error."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION.match(path.name)
        if not m:
            raise errors.MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        if m.group(1) in found:
            raise errors.MigrationError(f"two migrations numbered {m.group(1)}")
        found[m.group(1)] = Migration(m.group(1), path)
    return [found[v] for v in sorted(found)]


async def migrate(conn: Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; returns the versions applied by this call."""
    pending = list_migrations(directory)
    applied_now: list[str] = []
    await conn.execute(q("lock_migrations"), MIGRATION_LOCK_KEY)
    try:
        await conn.execute(q("create_schema_migrations"))
        done = {r["version"]: r["checksum"] for r in await conn.fetch(q("applied_migrations"))}
        for mig in pending:
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    raise errors.MigrationError(
                        f"{mig.path.name} changed after it was applied; "
                        "never edit an applied migration, add a new one"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute(q("record_migration"), mig.version, mig.checksum)
            except asyncpg.PostgresError as exc:
                raise errors.MigrationError(f"{mig.path.name} failed: {exc}") from exc
            applied_now.append(mig.version)
            log.info("migration_applied", version=mig.version, file=mig.path.name)
        await sync_networks(conn)
    finally:
        await conn.execute(q("unlock_migrations"), MIGRATION_LOCK_KEY)
    return applied_now


async def sync_networks(conn: Connection) -> None:
    """Add the registry's networks to the ``networks`` table (``chain`` columns reference
    it); refuse a database whose row for a network names another family than the registry.
    Runs under the migration lock, after the migrations (a no-op before the table exists)."""
    if not await conn.fetchval(q("networks_table_exists")):
        return
    rows = list(networks.NETWORKS.values())
    async with conn.transaction():
        await conn.executemany(q("sync_network"), [(n.name, n.family) for n in rows])
    stored = {r["name"]: r["family"] for r in await conn.fetch(q("network_families"))}
    wrong = [n.name for n in rows if stored.get(n.name) != n.family]
    if wrong:
        raise errors.MigrationError(
            f"the database has network(s) {', '.join(wrong)} of another family than the "
            "registry (watcher/networks.py): a network's family never changes; add a new name"
        )


async def pending_migrations(conn: Connection) -> list[str]:
    """Versions on disk that the database has not applied yet."""
    exists = await conn.fetchval(q("schema_migrations_exists"))
    done = {r["version"] for r in await conn.fetch(q("applied_migrations"))} if exists else set()
    return [m.version for m in list_migrations() if m.version not in done]


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kw: Any) -> Pool:
    """An asyncpg pool; connection failures become DatabaseError naming the cause."""
    try:
        # UTC as a startup parameter, not a SET: the pool's reset on release (RESET ALL)
        # would undo a SET, while a startup parameter is the session's own default.
        settings = {"timezone": "UTC", **kw.pop("server_settings", {})}
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, server_settings=settings, **kw
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise errors.DatabaseError(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


# The system user pgserver runs PostgreSQL as when started by root.
PGSERVER_ROOT_USER = "pgserver"


def refuse_foreign_pgdata(pgdata: Path) -> None:
    """PermissionError when the embedded server would take ``pgdata`` from its owner.

    Started by root, pgserver creates a ``pgserver`` system user, opens every parent
    directory to everyone and chowns pgdata to that user, even to join a running server.
    ``sudo watcher explain`` (or doctor, or migrate) on a host where the service user owns
    /var/lib/usdc-watcher would then leave the service unable to start its own database.
    So root may use only a pgdata (or, before one exists, a data dir) that is root's or
    already pgserver's; any other user only a pgdata it owns (PostgreSQL insists anyway).
    """
    euid = os.geteuid()
    target = pgdata if pgdata.exists() or euid != 0 else pgdata.parent
    try:
        owner = target.stat().st_uid
    except FileNotFoundError:
        return  # nothing there yet: whatever is made is this user's
    allowed = {euid}
    if euid == 0:
        with contextlib.suppress(KeyError):  # no such user yet: root's own data only
            allowed.add(pwd.getpwnam(PGSERVER_ROOT_USER).pw_uid)
    if owner in allowed:
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = f"uid {owner}"
    raise PermissionError(
        f"WATCHER_DATA_DIR: {str(target)!r} belongs to {name}, not to this user "
        f"(uid {euid}); run the command as {name} (e.g. sudo -u {name} -E watcher ...), "
        "or set DATABASE_URL"
        + (
            "; as root the embedded PostgreSQL would chown it away from its owner"
            if euid == 0
            else ""
        )
    )


class EmbeddedPostgres:
    """A private PostgreSQL from the pgserver wheel, in ``data_dir/pgdata``."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = Path(data_dir).expanduser() / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server; returns a DSN over its unix socket. PermissionError
        (naming WATCHER_DATA_DIR and its owner) for a data dir of another user."""
        refuse_foreign_pgdata(self.pgdata)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        joined = (self.pgdata / "postmaster.pid").exists()  # another process runs it
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            from pgserver import postgres_server

            self._server = postgres_server.get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        event = "embedded_postgres_joined" if joined else "embedded_postgres_started"
        log.info(event, pgdata=str(self.pgdata))
        return uri

    def stop(self) -> None:
        """Let go of the server; it stops when no other process still uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            # pgserver stops the server only when no other process holds it: say which,
            # so `watcher explain` beside a running daemon does not log a false "stopped".
            running = (self.pgdata / "postmaster.pid").exists()
            event = "embedded_postgres_left_running" if running else "embedded_postgres_stopped"
            log.info(event, pgdata=str(self.pgdata))

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
