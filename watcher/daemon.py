"""The supervisor: one stop event, a TaskGroup of followers and the API, a metrics server.

Lifecycle (see CONVENTIONS):

* SIGTERM / SIGINT set ``stop``. Followers check it between steps; the API
  server is told to exit. After ``stop`` everything gets ``GRACE_SECONDS`` to
  finish, then is cancelled; a cancelled step rolls back its transaction.
* A task that crashes sets ``stop`` too and the process exits non-zero, so
  systemd or the container runtime restarts it.
* With no ``DATABASE_URL`` the embedded PostgreSQL is started first and stopped
  last.
* Each follower runs only while this process holds its chain's leader lock
  (``watcher.leader``); other processes on the same database stand by.
* The scheduled jobs (``watcher.jobs``: analytics, cleanup, the Stripe catch-up) run
  only while this process holds the jobs lock; a failed job never stops the daemon.
* Under systemd (``Type=notify``): ``READY=1`` once migrations are applied and
  every follower finished its first step (or stands by), ``WATCHDOG=1`` only
  while every follower keeps beating (``watcher.progress``), ``STOPPING=1``
  when the stop begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import structlog
import uvicorn
from prometheus_client import start_http_server

from watcher import (
    __version__,
    db,
    errors,
    jobs,
    leader,
    metrics,
    networks,
    progress,
    sdnotify,
    startup,
)
from watcher.chains import follower
from watcher.refunds import worker as refunds_worker
from watcher.settings import Settings

log = structlog.get_logger(__name__)

GRACE_SECONDS = 8.0
READY_WARN_SECONDS = 60.0
DB_CHECK_SECONDS = 15.0
DB_CHECK_TIMEOUT_SECONDS = 5.0
# A failed ping, whatever shape it takes. db.TRANSIENT_ERRORS has InternalClientError (a
# pooled session killed mid-ping): missing it, the check task died and db_up stayed 1.
DB_CHECK_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncpg.PostgresError,
    *db.TRANSIENT_ERRORS,
)


Follower = follower.Follower  # what every chain family hands the daemon


def build_followers(settings: Settings, pool: db.Pool) -> list[Follower]:
    """The followers of every enabled chain (a chain needs an RPC URL and a receiving address).

    Every chain family builds its own, the same way: ``<family>.followers(settings, pool)``.
    """
    from watcher.chains import evm, solana  # loaded only when followers run (not `watcher api`)

    return [f for family in (evm, solana) for f in family.followers(settings, pool)]


def build_jobs(settings: Settings) -> list[jobs.Job]:
    """The scheduled jobs (watcher/jobs.py): the analytics roll-up, the cleanup, and the
    Stripe catch-up when Stripe is configured (api/ code: the daemon may load it)."""
    out = jobs.builtin(settings)
    out += refunds_worker.build_jobs(settings)  # the refund sender, when a key can send
    if settings.value("stripe_secret_key") is not None:
        from api import stripe_sync

        sync = functools.partial(stripe_sync.run, settings)
        out.append(jobs.stripe_sync(settings.watcher_job_stripe_sync_seconds, sync))
    return out


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: our stop event drives it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[db.Pool]:
    """A migrated pool on ``DATABASE_URL``, or on the embedded server when it is unset."""
    async with (
        database_dsn(settings) as dsn,
        migrated_pool(dsn, from_env=settings.database_url is not None) as pool,
    ):
        yield pool


@contextlib.asynccontextmanager
async def database_dsn(settings: Settings) -> AsyncIterator[str]:
    """``DATABASE_URL``, or the DSN of the embedded server (started here, stopped on exit).

    A data directory the embedded server cannot use is refused first (ConfigError); a
    server that does not start is a DatabaseUnreachable naming WATCHER_DATA_DIR."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    startup.check_data_dir(settings)
    embedded = db.EmbeddedPostgres(settings.watcher_data_dir)
    try:
        dsn = await asyncio.to_thread(embedded.start)
    except Exception as exc:  # pgserver raises OSError, CalledProcessError, RuntimeError...
        raise startup.embedded_failure(exc, settings.watcher_data_dir) from exc
    try:
        yield dsn
    finally:
        await asyncio.to_thread(embedded.stop)


@contextlib.asynccontextmanager
async def migrated_pool(dsn: str, *, from_env: bool = False) -> AsyncIterator[db.Pool]:
    """A pool on ``dsn`` after applying pending migrations; closed (or terminated) on exit.
    ``from_env``: the DSN is DATABASE_URL, which a failure to connect then names."""
    try:
        pool = await db.create_pool(dsn)
    except errors.DatabaseError as exc:
        if not from_env or exc.__cause__ is None:
            raise
        raise startup.connect_failure(exc.__cause__, dsn) from exc.__cause__
    try:
        async with pool.acquire() as conn:
            await db.migrate(conn)
        yield pool
    finally:
        try:
            async with asyncio.timeout(3):
                await pool.close()
        except TimeoutError:  # a connection is stuck in a query: do not wait for it
            pool.terminate()


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """How the API is served, by ``watcher run`` and ``watcher api`` alike (and by tests).

    ``proxy_headers`` is off: uvicorn would otherwise take X-Forwarded-For from
    any loopback peer as the client address. The API resolves the client itself
    from ``WATCHER_TRUSTED_PROXIES`` (api/clientip.py).
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",  # the API closes its RPC pools and HTTP clients at shutdown
        proxy_headers=False,
        forwarded_allow_ips="",
    )


def api_servers(settings: Settings, pool: db.Pool) -> list[tuple[str, uvicorn.Server]]:
    """The API's listeners: the main one, and the gateway's own when
    ``WATCHER_GATEWAY_HOST``/``_PORT`` are set. Then the gateway's routes are served
    there only, next to the payer's routes (invoices, tokens) and without the admin
    routes, so the main listener (admin, Stripe webhooks) can stay private."""
    from api.app import create_app

    own = startup.own_gateway(settings)
    main = create_app(settings, pool, gateway_routes=not own)
    config = uvicorn_config(main, settings.watcher_api_host, settings.watcher_api_port)
    servers: list[tuple[str, uvicorn.Server]] = [("api", _Server(config))]
    if own:
        assert settings.watcher_gateway_host is not None
        assert settings.watcher_gateway_port is not None
        public = create_app(settings, pool, admin=False)
        gw = uvicorn_config(public, settings.watcher_gateway_host, settings.watcher_gateway_port)
        servers.append(("gateway", _Server(gw)))
    return servers


async def _supervise(name: str, coro: Awaitable[None], stop: asyncio.Event) -> None:
    """Run one task; a crash is logged, counted and stops the whole process."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except (Exception, SystemExit) as exc:  # uvicorn calls sys.exit when it cannot bind
        log.exception("task_crashed", task=name)
        metrics.FOLLOWER_CRASHES.labels(chain=name).inc()
        stop.set()
        raise RuntimeError(f"task {name} crashed") from exc


FollowerBuilder = Callable[[Settings, db.Pool], list[Follower]]


def elected(follower: Follower, dsn: str) -> Follower:
    """The follower, run only while this process holds its chain's leader lock."""
    return Follower(
        follower.chain, functools.partial(leader.lead, follower.chain, follower.run, dsn)
    )


async def run(
    settings: Settings,
    *,
    with_api: bool = True,
    with_followers: bool = True,
    followers: FollowerBuilder = build_followers,
) -> int:
    """The daemon. Returns the process exit code: 0 after a clean stop, 1 after a crash.

    ``followers`` builds the chain followers once the database is ready (tests pass
    their own); each is wrapped by :func:`elected`.
    """
    stop = asyncio.Event()
    _install_signals(stop)
    notifier = sdnotify.Notifier()
    metrics.BUILD.info({"version": __version__})
    metrics_server = _metrics_server(settings) if with_followers else None
    crashed = False
    sockets: dict[str, list[socket.socket]] = {}
    try:
        # Bound before the database starts: a port in use stops here, naming its variable.
        sockets = startup.api_sockets(settings) if with_api else {}
        async with (
            database_dsn(settings) as dsn,
            migrated_pool(dsn, from_env=settings.database_url is not None) as pool,
        ):
            metrics.UP.set(1)
            metrics.DB_UP.set(1)
            built = followers(settings, pool) if with_followers else []
            # Only the process holding the jobs lock runs them; `watcher api` never does.
            runner = jobs.Runner(
                build_jobs(settings) if with_followers else [],
                pool,
                dsn,
                timeout=settings.watcher_job_timeout_seconds,
            )
            servers = api_servers(settings, pool) if with_api else []
            log.info(
                "daemon_started",
                followers=[f.chain for f in built],
                api=f"http://{settings.watcher_api_host}:{settings.watcher_api_port}"
                if servers
                else None,
                gateway=f"http://{settings.watcher_gateway_host}:{settings.watcher_gateway_port}"
                if len(servers) > 1
                else None,
                metrics_port=settings.watcher_metrics_port if metrics_server else None,
                jobs=[j.name for j in runner.jobs],
                systemd_notify=notifier.enabled,
            )
            tasks = [elected(f, dsn) for f in built]
            # Every daemon delivers webhooks (claims are SKIP LOCKED: no leader needed).
            extra = (webhook_task(settings, pool),) if with_followers else ()
            health = asyncio.create_task(db_health(pool, stop), name="db-health")
            try:
                crashed = await _run_tasks(tasks, servers, sockets, stop, notifier, runner, extra)
            finally:
                health.cancel()
    finally:
        for sock in (s for listening in sockets.values() for s in listening):
            sock.close()
        metrics.UP.set(0)
        if metrics_server is not None:
            metrics_server.shutdown()
    log.info("daemon_stopped", crashed=crashed)
    return 1 if crashed else 0


def _metrics_server(settings: Settings) -> Any:
    """The Prometheus endpoint (WATCHER_METRICS_PORT; 0 = none); ListenError if taken."""
    if not settings.watcher_metrics_port:
        return None
    host, port = settings.watcher_metrics_host, settings.watcher_metrics_port
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as exc:
        why = startup.listen_failure(
            exc, "WATCHER_METRICS_PORT", "WATCHER_METRICS_HOST", host, port
        ).replace("a free port", "a free port (0 turns the endpoint off)")
        raise errors.ListenError(why) from exc
    return server


def webhook_task(settings: Settings, pool: db.Pool) -> Follower:
    """The webhook delivery worker, run like a follower (without a leader lock)."""
    from watcher.webhooks import worker  # httpx client and signing: only where it runs

    return Follower("webhooks", worker.Worker(pool, worker.Config.from_settings(settings)).run)


async def _run_tasks(
    followers: list[Follower],
    servers: list[tuple[str, uvicorn.Server]],
    sockets: dict[str, list[socket.socket]],
    stop: asyncio.Event,
    notifier: sdnotify.Notifier,
    runner: jobs.Runner,
    extra: tuple[Follower, ...] = (),
) -> bool:
    """Run until ``stop``; then give every task the grace period. True if one crashed."""
    tasks = [asyncio.create_task(_supervise("jobs", runner.run(stop), stop), name="jobs")]
    for x in extra:
        tasks.append(asyncio.create_task(_supervise(x.chain, x.run(stop), stop), name=x.chain))
    for f in followers:
        metrics.CHAIN_BLOCK_SECONDS.labels(chain=f.chain).set(networks.get(f.chain).block_seconds)
        tasks.append(asyncio.create_task(_supervise(f.chain, f.run(stop), stop), name=f.chain))
    for name, server in servers:
        serving = server.serve(sockets=sockets[name])
        tasks.append(asyncio.create_task(_supervise(name, serving, stop), name=name))
    systemd = asyncio.create_task(_systemd(notifier, [f.chain for f in followers], stop))
    await stop.wait()
    notifier.stopping()
    log.info("stopping", grace_seconds=GRACE_SECONDS)
    for _, server in servers:
        server.should_exit = True
    done, pending = await asyncio.wait(tasks, timeout=GRACE_SECONDS) if tasks else (set(), set())
    for t in pending:
        log.warning("task_cancelled_after_grace", task=t.get_name())
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2)
    systemd.cancel()
    for f in followers:
        metrics.FOLLOWER_RUNNING.labels(chain=f.chain).set(0)
    return any(not t.cancelled() and t.exception() is not None for t in done)


async def db_health(pool: db.Pool, stop: asyncio.Event, every: float = DB_CHECK_SECONDS) -> None:
    """Keep ``watcher_db_up`` true to the database's state (the DatabaseDown alert reads it)."""
    while not stop.is_set():
        try:
            async with asyncio.timeout(DB_CHECK_TIMEOUT_SECONDS):
                await pool.fetchval(db.q("ping"))
            up = 1
        except DB_CHECK_ERRORS as exc:
            up = 0
            log.warning("db_check_failed", error=type(exc).__name__)
        metrics.DB_UP.set(up)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()


async def _systemd(notifier: sdnotify.Notifier, chains: list[str], stop: asyncio.Event) -> None:
    """READY=1 once every follower made its first step; WATCHDOG=1 while they all keep beating."""
    if not notifier.enabled:
        return
    interval = notifier.watchdog_interval()
    ready = False
    last_check = 0.0
    began = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if not ready and progress.all_started(chains):
            ready = notifier.ready(f"following {', '.join(chains) or 'no chain'}")
        elif not ready and now - began > READY_WARN_SECONDS:
            began = now  # once a minute: systemd's TimeoutStartSec will stop us otherwise
            silent = [c for c in chains if progress.last_beat(c) is None]
            log.warning("ready_withheld", reason="no first step yet", chains=silent)
        # A follower silent for a whole watchdog period is stuck: stop pinging, let systemd act.
        if ready and interval and now - last_check >= interval:
            last_check = now
            if progress.all_beating(chains, within=2 * interval, now=now):
                notifier.watchdog()
            else:
                stuck = [c for c in chains if not progress.all_beating([c], 2 * interval, now)]
                log.warning("watchdog_withheld", reason="no progress", chains=stuck)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(interval or 0.5, 0.5)):
                await stop.wait()
