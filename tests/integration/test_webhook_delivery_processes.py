"""Webhook delivery by real `watcher run` processes: killed with SIGKILL mid-delivery and
restarted (nothing lost), and two daemons on one database (every attempt made once)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from devkit.anvil import Anvil, Token
from devkit.webhook_receiver import Answer, Receiver
from tests.integration.test_webhook_delivery import add_endpoint, event_ids, pay, wait_settled
from watcher import db

PAYMENTS = 1000


def daemon_env(anvil: Anvil, usdc: Token, us: str, database_url: str, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X402_", "WATCHER_"))}
    env.update(
        DATABASE_URL=database_url,
        WATCHER_DATA_DIR=str(data),
        WATCHER_METRICS_PORT="0",
        WATCHER_LOG_FORMAT="json",
        X402_BASE_RPC_URL=anvil.url,
        X402_BASE_PAYMENT_ADDRESS=us,
        X402_BASE_USDC_ADDRESS=usdc.address,
        X402_BASE_CHAIN_ID=str(anvil.chain_id),
        X402_BASE_CONFIRMATIONS="2",
        X402_BASE_START_BLOCK="0",
        WATCHER_WEBHOOK_RETRY_SCHEDULE="0.2s,0.5s,1s,1s,2s,2s,2s,5s,5s",
        WATCHER_WEBHOOK_TIMEOUT_SECONDS="2",
        WATCHER_WEBHOOK_CONCURRENCY="8",
    )
    return env


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher", "run", "--no-api",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def ended(proc: asyncio.subprocess.Process, how: signal.Signals) -> None:
    if proc.returncode is None:
        proc.send_signal(how)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def first_fails(id_: str, n: int) -> Answer:
    return Answer(500 if n == 1 and int(id_[4:]) % 5 == 0 else 200, delay=0.02)


@pytest.mark.slow
async def test_daemon_killed_mid_delivery_then_restarted_loses_no_event(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    us = anvil.accounts[7]
    receiver = Receiver(secrets=[], behave=first_fails)
    _, secret = await add_endpoint(pool, receiver.url, ["payment.credited"])
    receiver.secrets = [secret]
    await pay(anvil, usdc, us, PAYMENTS)
    env = daemon_env(anvil, usdc, us, database_url, tmp_path)
    async with receiver:
        proc = await start(env)
        try:
            deadline = time.monotonic() + 90
            while len(receiver.ids()) < PAYMENTS // 3:
                assert time.monotonic() < deadline, "the first daemon delivered too little"
                assert proc.returncode is None, "the first daemon died on its own"
                await asyncio.sleep(0.01)
        finally:
            await ended(proc, signal.SIGKILL)
        seen_at_kill = len(receiver.ids())
        assert seen_at_kill < PAYMENTS, "everything was delivered before the kill"
        # Claimed but never recorded: the attempts the kill cut off (their lease runs out).
        cut = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries d WHERE d.attempts > "
            "(SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id)"
        )
        assert cut > 0, "the kill did not land mid-delivery"
        proc = await start(env)
        try:
            await wait_settled(pool, PAYMENTS, 120)
        finally:
            await ended(proc, signal.SIGTERM)
    assert proc.returncode == 0
    want = await event_ids(pool)
    assert len(want) == PAYMENTS
    assert receiver.ids() == want and receiver.unverified() == []
    assert (
        await pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status <> 'succeeded'")
        == 0
    )
    workers = await pool.fetch(
        "SELECT DISTINCT split_part(worker, ':', 2) AS pid FROM webhook_attempts"
    )
    assert len(workers) == 2  # the killed daemon and the one after it


@pytest.mark.slow
async def test_two_daemons_on_one_database_make_each_attempt_exactly_once(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    us = anvil.accounts[7]
    receiver = Receiver(secrets=[], behave=first_fails)
    _, secret = await add_endpoint(pool, receiver.url, ["payment.credited"])
    receiver.secrets = [secret]
    await pay(anvil, usdc, us, PAYMENTS)
    env = daemon_env(anvil, usdc, us, database_url, tmp_path)
    env["WATCHER_WEBHOOK_CONCURRENCY"] = "4"
    async with receiver:
        procs = [await start(env), await start(env)]
        try:
            await wait_settled(pool, PAYMENTS, 120)
            assert all(p.returncode is None for p in procs)
        finally:
            for p in procs:
                await ended(p, signal.SIGTERM)
    assert [p.returncode for p in procs] == [0, 0]
    want = await event_ids(pool)
    assert receiver.ids() == want and receiver.unverified() == []
    rows = await pool.fetch(
        "SELECT d.event_id, d.attempts, count(a.id) AS made, array_agg(a.worker) AS by "
        "FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id "
        "GROUP BY d.id"
    )
    assert len(rows) == PAYMENTS
    for r in rows:
        # Every counted attempt was made and recorded once (UNIQUE (delivery, attempt)),
        # and reached the receiver once: no attempt was made by both daemons.
        assert r["made"] == r["attempts"] == len(receiver.hits[f"evt_{r['event_id']}"])
    retried = [r for r in rows if r["attempts"] > 1]
    assert len(retried) >= len([i for i in want if int(i[4:]) % 5 == 0]) > 0
    workers = {w for r in rows for w in r["by"]}
    assert len({w.split(":")[1] for w in workers}) == 2  # both daemons delivered
