"""Scheduled jobs on a real PostgreSQL: one leader runs them, failures are contained."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from prometheus_client import REGISTRY

from devkit import stripe_helpers as sh
from devkit.anvil import free_port
from watcher import daemon, db, jobs, ledger
from watcher.settings import Settings

POLL = 0.05
NAMES = ("analytics", "cleanup", "stripe_sync")
PREFIXES = ("X402_", "STRIPE_", "WATCHER_", "DATABASE_URL")
ADDR = "0x" + "11" * 20


async def _scrape(port: int) -> str:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return ""  # not serving yet


def _scraped_runs(text: str, name: str) -> float:
    found = re.search(rf'^watcher_job_runs_total{{name="{name}",outcome="ok"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _runs(name: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("watcher_job_runs_total", {"name": name, "outcome": outcome})
    return value or 0.0


def _recorder(log: list[tuple[str, str, float]], who: str, name: str) -> jobs.JobRun:
    async def run(pool: db.Pool) -> None:
        log.append((who, name, time.monotonic()))
        await pool.fetchval(db.q("ping"))

    return run


async def _until(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got if isinstance(got, bool) else await got:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _expired_invoice(pool: db.Pool, *, hours_ago: float) -> int:
    invoice_id: int = await pool.fetchval(
        "INSERT INTO invoices (chain, pay_to, token, amount, requests, claim_secret_hash,"
        " created_at, expires_at) VALUES ('base', $1, $1, $2, 10, $3,"
        " now() - $4::interval - interval '1 hour', now() - $4::interval) RETURNING id",
        ADDR,
        1_000_000 + int(hours_ago * 1000),
        bytes([int(hours_ago) % 256]) * 32,
        timedelta(hours=hours_ago),
    )
    return invoice_id


async def test_two_runners_on_one_database_run_each_job_once_per_period(
    pool: db.Pool, database_url: str
) -> None:
    every = {"fast": 0.3, "slow": 0.7}
    log: list[tuple[str, str, float]] = []
    stops = {who: asyncio.Event() for who in ("A", "B")}

    def runner(who: str) -> jobs.Runner:
        mine = [jobs.Job(n, s, _recorder(log, who, n)) for n, s in every.items()]
        return jobs.Runner(mine, pool, database_url, timeout=5, poll=POLL)

    tasks = {who: asyncio.create_task(runner(who).run(stops[who])) for who in stops}
    await asyncio.sleep(2.2)
    leaders = {who for who, _, _ in log}
    assert len(leaders) == 1, f"both runners ran jobs: {log}"
    (lead,) = leaders
    for name, period in every.items():
        starts = [t for who, n, t in log if n == name]
        assert len(starts) >= 2, (name, log)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= period, (name, gaps)  # never twice in one period
    holder = await pool.fetchrow(db.q("leader_lock_holder"), jobs.lock_key())
    assert holder is not None and holder["application_name"].startswith("usdc-watcher jobs")

    # The leader stops: the standby takes the lock and runs every job at once.
    other = "B" if lead == "A" else "A"
    stops[lead].set()
    await asyncio.wait_for(tasks[lead], 5)
    await _until(lambda: {n for who, n, _ in log if who == other} == set(every))
    stops[other].set()
    await asyncio.wait_for(tasks[other], 5)


async def test_a_failing_job_is_counted_and_the_others_still_run(
    pool: db.Pool, database_url: str
) -> None:
    log: list[tuple[str, str, float]] = []

    async def boom(pool: db.Pool) -> None:
        raise RuntimeError("a job bug")

    async def hangs(pool: db.Pool) -> None:
        await asyncio.sleep(30)

    async def hangs_in_sql(conn: db.Connection) -> None:
        await ledger.expire_invoices(conn)  # rolled back with the rest when time is up
        await conn.execute("SELECT pg_sleep(30)")

    invoice = await _expired_invoice(pool, hours_ago=2)
    listed = [
        jobs.Job("t_boom", 0.2, boom),
        jobs.Job("t_hangs", 0.2, hangs),
        jobs.Job("t_sql", 0.2, jobs.transactional(hangs_in_sql, 0.3)),
        jobs.Job("t_fine", 0.2, _recorder(log, "A", "t_fine")),
        jobs.Job("t_off", 0, _recorder(log, "A", "t_off")),
    ]
    before = {(n, o): _runs(n, o) for n in ("t_boom", "t_fine") for o in ("failed", "ok")}
    runner = jobs.Runner(listed, pool, database_url, timeout=0.3, poll=POLL)
    assert await runner.once() == {
        "t_boom": "failed",
        "t_hangs": "timeout",
        "t_sql": "timeout",
        "t_fine": "ok",
    }
    assert await pool.fetchval("SELECT status FROM invoices WHERE id = $1", invoice) == "open"
    assert await pool.fetchval("SELECT count(*) FROM events") == 0

    # Scheduled: the bug fails every period, the good job keeps its schedule, nothing raises.
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await _until(
        lambda: len(log) >= 3 and _runs("t_boom", "failed") >= before[("t_boom", "failed")] + 3
    )
    stop.set()
    await asyncio.wait_for(task, 5)  # returned, not raised
    assert _runs("t_fine", "ok") >= before[("t_fine", "ok")] + 3
    assert _runs("t_fine", "failed") == before[("t_fine", "failed")]
    assert not [n for _, n, _ in log if n == "t_off"]  # 0 seconds: disabled
    assert REGISTRY.get_sample_value("watcher_job_interval_seconds", {"name": "t_off"}) is None
    success = REGISTRY.get_sample_value(
        "watcher_job_last_success_timestamp_seconds", {"name": "t_fine"}
    )
    assert success is not None and time.time() - success < 5


async def test_the_cleanup_job_expires_invoices_and_writes_their_events(
    pool: db.Pool, database_url: str
) -> None:
    stale = await _expired_invoice(pool, hours_ago=2)
    in_grace = await _expired_invoice(pool, hours_ago=0.5)  # still inside the late-payment hour
    await pool.execute(
        "INSERT INTO api_rate_limits (bucket, client, window_start, hits) VALUES"
        " ('claim', '198.51.100.7', now() - interval '1 hour', 3),"
        " ('claim', '198.51.100.7', now(), 1)"
    )
    settings = Settings(_env_file=None)
    runner = jobs.Runner(jobs.builtin(settings), pool, database_url, timeout=10, poll=POLL)
    assert await runner.once() == {"analytics": "ok", "cleanup": "ok"}

    statuses = dict(await pool.fetch("SELECT id, status FROM invoices"))
    assert statuses == {stale: "expired", in_grace: "open"}
    rows = await pool.fetch("SELECT type, resource, resource_id, data FROM events")
    assert [(r["type"], r["resource"], r["resource_id"]) for r in rows] == [
        ("invoice.expired", "invoice", str(stale))
    ]
    assert await pool.fetchval("SELECT count(*) FROM api_rate_limits") == 1
    assert await pool.fetchval("SELECT count(*) FROM x402_analytics") > 0

    # Again: nothing more to expire, no second event.
    assert await runner.once() == {"analytics": "ok", "cleanup": "ok"}
    assert await pool.fetchval("SELECT count(*) FROM events") == 1


async def test_burst_mode_waits_for_the_lock_or_says_it_did_not_get_it(
    pool: db.Pool, database_url: str
) -> None:
    log: list[tuple[str, str, float]] = []
    runner = jobs.Runner(
        [jobs.Job("t_once", 60, _recorder(log, "A", "t_once"))], pool, database_url, timeout=5
    )
    holder = await asyncpg.connect(database_url)
    try:
        assert await holder.fetchval(db.q("try_leader_lock"), jobs.lock_key())
        assert await runner.once(wait=0.2) is None  # another process is the jobs leader
        assert log == []
    finally:
        await holder.close()
    assert await runner.once(wait=1) == {"t_once": "ok"}
    assert [n for _, n, _ in log] == ["t_once"]


async def test_the_stripe_catch_up_looks_back_72_hours_first_then_since_its_last_run(
    pool: db.Pool,
) -> None:
    windows: list[datetime] = []

    async def sync(pool: db.Pool, since: datetime) -> dict[str, int]:
        windows.append(since)
        return {"duplicate": 1}

    job = jobs.stripe_sync(60, sync)
    first_at = datetime.now(UTC)
    assert await job.run(pool) == {"duplicate": 1}
    await job.run(pool)
    assert abs(windows[0] - (first_at - timedelta(hours=72))) < timedelta(seconds=5)
    assert abs(windows[1] - (first_at - timedelta(minutes=10))) < timedelta(seconds=5)


def test_stripe_sync_is_scheduled_only_when_stripe_is_configured() -> None:
    assert [j.name for j in daemon.build_jobs(Settings(_env_file=None))] == [
        "analytics",
        "cleanup",
    ]
    configured = daemon.build_jobs(sh.settings(watcher_job_stripe_sync_seconds=120))
    assert [(j.name, j.every) for j in configured][-1] == ("stripe_sync", 120)


async def test_the_daemon_runs_every_job_on_its_own(
    pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    """`watcher run` with Stripe configured: analytics, cleanup and the Stripe catch-up run
    by themselves; the expired invoice gets its event without anyone calling cleanup."""
    stale = await _expired_invoice(pool, hours_ago=3)
    metrics_port = free_port()
    async with sh.localstripe() as upstream:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)},
            "DATABASE_URL": database_url,
            "WATCHER_DATA_DIR": str(tmp_path),
            "WATCHER_LOG_FORMAT": "json",
            "WATCHER_METRICS_PORT": str(metrics_port),
            "WATCHER_JOB_CLEANUP_SECONDS": "0.5",
            "STRIPE_SECRET_KEY": "sk_test_local",
            "STRIPE_WEBHOOK_SECRET": sh.WEBHOOK_SECRET,
            "STRIPE_PRICE_ID_PRO": sh.PRICES["pro"],
            "STRIPE_API_BASE": upstream,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "watcher", "run", "--no-api"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:

            async def all_ran() -> bool:
                events = await pool.fetch(
                    "SELECT type FROM events WHERE resource_id = $1", str(stale)
                )
                text = await _scrape(metrics_port)
                return [e["type"] for e in events] == ["invoice.expired"] and all(
                    _scraped_runs(text, n) >= 1 for n in NAMES
                )

            await _until(all_ran, timeout=60)
            scraped = await _scrape(metrics_port)
            assert "watcher_jobs_leader 1.0" in scraped
            assert 'watcher_job_interval_seconds{name="cleanup"} 0.5' in scraped
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert b'"event": "job_done"' in err
