"""Daemon behaviour an operator relies on: leader failover across two `watcher run`
processes following anvil with the EVM follower, systemd notify/watchdog over a real unix
socket, a crashing follower ending the run non-zero."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from devkit.anvil import Anvil, Token, free_port
from devkit.evmkit import payments
from devkit.pg import SessionPostgres
from tests.integration.test_daemon import _env
from watcher import daemon, db, leader, progress
from watcher.settings import Settings


def _running_metric(port: int) -> float | None:
    """``watcher_follower_running{chain="base"}`` as the process's /metrics shows it."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    m = re.search(r'^watcher_follower_running\{chain="base"\} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else None


async def _wait_metric(port: int, want: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(_running_metric, port) != want:
        assert time.monotonic() < deadline, f"metric on :{port} never became {want}"
        await asyncio.sleep(0.1)


async def _credited(pool: db.Pool, want: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in await payments(pool) if r["state"] == "credited"]
        if len(rows) >= want:
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} credited, waiting for {want}"
        await asyncio.sleep(0.1)


def _start(
    tmp_path: Path, anvil: Anvil, usdc: Token, database_url: str, metrics_port: int, **extra: str
) -> subprocess.Popen[str]:
    env = _env(
        tmp_path,
        DATABASE_URL=database_url,
        WATCHER_METRICS_PORT=str(metrics_port),
        X402_BASE_RPC_URL=anvil.url,
        X402_BASE_PAYMENT_ADDRESS=anvil.accounts[7],
        X402_BASE_USDC_ADDRESS=usdc.address,
        X402_BASE_CHAIN_ID=str(anvil.chain_id),
        X402_BASE_CONFIRMATIONS="2",
        X402_BASE_START_BLOCK="0",
    )
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # only where asked
        env.pop(name, None)
    env.update(extra)
    return subprocess.Popen(
        [sys.executable, "-m", "watcher", "run", "--no-api"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _holder_app(database_url: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(db.q("leader_lock_holder"), leader.lock_key("base"))
    finally:
        await conn.close()
    return None if row is None else str(row["application_name"])


async def test_standby_process_takes_over_after_kill_9_and_credits_once(
    tmp_path: Path,
    anvil: Anvil,
    usdc: Token,
    pool: db.Pool,
    database_url: str,
    notify_socket: socket.socket,
) -> None:
    """Two `watcher run` on one database: one follows, the other stands by; kill -9 the
    leader and the standby takes over, credits the next payment, and nothing twice."""
    payer, us = anvil.accounts[1], anvil.accounts[7]
    port_a, port_b = free_port(), free_port()
    notify = {"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"], "WATCHDOG_USEC": "1000000"}
    a = _start(tmp_path, anvil, usdc, database_url, port_a)
    b: subprocess.Popen[str] | None = None
    try:
        await _wait_metric(port_a, 1.0)
        b = _start(tmp_path, anvil, usdc, database_url, port_b, **notify)
        await _wait_metric(port_b, 0.0)  # B is up and standing by
        assert f"pid={a.pid}" in (await _holder_app(database_url) or "")
        first = await usdc.transfer(payer, us, 1_000_000)
        await anvil.mine(2)
        await _credited(pool, 1)  # by A
        got = await _receive(notify_socket, "READY=1")
        assert got[0].startswith("READY=1")  # a standby is ready too

        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        await _wait_metric(port_b, 1.0, 15)
        assert f"pid={b.pid}" in (await _holder_app(database_url) or "")
        second = await usdc.transfer(payer, us, 2_000_000)
        await anvil.mine(2)
        credited = await _credited(pool, 2)  # by B
        await _receive(notify_socket, "WATCHDOG=1")  # B's follower makes progress

        b.send_signal(signal.SIGTERM)
        _, stderr = b.communicate(timeout=20)
        assert b.returncode == 0, stderr[-2000:]
        assert '"event": "leader_acquired"' in stderr
        assert _drain(notify_socket)[-1:] == ["STOPPING=1"]
        assert await _holder_app(database_url) is None
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
            elif p is not None and p.stderr is not None and not p.stderr.closed:
                p.stderr.close()
    assert sorted((r["tx_hash"], r["amount"]) for r in credited) == sorted(
        [(first["transactionHash"], 1_000_000), (second["transactionHash"], 2_000_000)]
    )
    assert len(await payments(pool)) == 2


def _settings(database_url: str) -> Settings:
    return Settings(_env_file=None, database_url=database_url, watcher_metrics_port=0)


async def test_a_crashing_follower_ends_the_run_non_zero(database_url: str) -> None:
    async def broken(stop: asyncio.Event) -> None:
        raise ValueError("bad block")

    before = REGISTRY.get_sample_value("watcher_follower_crashes_total", {"chain": "ethereum"})
    code = await asyncio.wait_for(
        daemon.run(
            _settings(database_url),
            with_api=False,
            followers=lambda s, p: [daemon.Follower("ethereum", broken)],
        ),
        30,
    )
    assert code == 1
    after = REGISTRY.get_sample_value("watcher_follower_crashes_total", {"chain": "ethereum"})
    assert (after or 0) - (before or 0) == 1


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield sock
    sock.close()


async def _receive(sock: socket.socket, wanted: str, timeout: float = 30) -> list[str]:
    """Messages received until one starts with ``wanted`` (bounded wait)."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(m.startswith(wanted) for m in got):
        assert time.monotonic() < deadline, f"no {wanted!r} in {got}"
        await asyncio.sleep(0.05)
        got += _drain(sock)
    return got


def _drain(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_systemd_ready_watchdog_only_while_progressing_then_stopping(
    database_url: str, notify_socket: socket.socket
) -> None:
    phases: dict[str, list[str]] = {}

    async def follower(stop: asyncio.Event) -> None:
        assert _drain(notify_socket) == []  # not ready before the first step
        for _ in range(20):
            progress.beat("solana")
            await asyncio.sleep(0.05)
        phases["progressing"] = _drain(notify_socket)
        await asyncio.sleep(1.0)  # stuck: no beat for 20 watchdog intervals
        phases["stuck"] = _drain(notify_socket)
        stop.set()

    code = await asyncio.wait_for(
        daemon.run(
            _settings(database_url),
            with_api=False,
            followers=lambda s, p: [daemon.Follower("solana", follower)],
        ),
        30,
    )
    assert code == 0
    progressing = phases["progressing"]
    assert progressing[0].startswith("READY=1\nSTATUS=following solana")
    assert progressing.count("WATCHDOG=1") >= 3
    # Pings continue at most for the 2-interval grace after the last beat, then stop.
    assert phases["stuck"].count("WATCHDOG=1") <= 3
    assert _drain(notify_socket)[-1:] == ["STOPPING=1"]


async def test_db_health_reports_a_database_that_went_away(postgres: SessionPostgres) -> None:
    dsn = await postgres.clone()
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    stop = asyncio.Event()
    checker = asyncio.create_task(daemon.db_health(pool, stop, every=0.1))
    try:

        def db_up() -> float | None:
            return REGISTRY.get_sample_value("watcher_db_up")

        deadline = time.monotonic() + 10
        while db_up() != 1.0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await postgres.drop(dsn)  # the server forgets the database: every check fails now
        deadline = time.monotonic() + 20
        while db_up() != 0.0:
            assert time.monotonic() < deadline, "watcher_db_up stayed 1"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(checker, 10)
        pool.terminate()
