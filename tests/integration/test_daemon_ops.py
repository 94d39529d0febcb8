"""Daemon behaviour an operator relies on: leader failover across processes, systemd
notify/watchdog over a real unix socket, a crashing follower ending the run non-zero."""

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

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from tests.anvil import free_port
from tests.integration.test_daemon import _env
from watcher import daemon, db, leader, progress
from watcher.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _running_metric(port: int) -> float | None:
    """``watcher_follower_running{chain="base"}`` as the process's /metrics shows it."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    m = re.search(r'^watcher_follower_running\{chain="base"\} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else None


def _wait_metric(port: int, want: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _running_metric(port) != want:
        assert time.monotonic() < deadline, f"metric on :{port} never became {want}"
        time.sleep(0.1)


def _start(tmp_path: Path, database_url: str, metrics_port: int) -> subprocess.Popen[str]:
    env = _env(tmp_path, DATABASE_URL=database_url, WATCHER_METRICS_PORT=str(metrics_port))
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.leader_child"],
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


async def test_standby_process_takes_over_after_kill_9(tmp_path: Path, database_url: str) -> None:
    port_a, port_b = free_port(), free_port()
    a = _start(tmp_path, database_url, port_a)
    b: subprocess.Popen[str] | None = None
    try:
        await asyncio.to_thread(_wait_metric, port_a, 1.0)
        b = _start(tmp_path, database_url, port_b)
        await asyncio.to_thread(_wait_metric, port_b, 0.0)  # B is up and standing by
        assert _running_metric(port_a) == 1.0
        assert f"pid={a.pid}" in (await _holder_app(database_url) or "")

        a.send_signal(signal.SIGKILL)
        a.wait(timeout=10)
        await asyncio.to_thread(_wait_metric, port_b, 1.0, 15)
        assert f"pid={b.pid}" in (await _holder_app(database_url) or "")

        b.send_signal(signal.SIGTERM)
        _, stderr = b.communicate(timeout=20)
        assert b.returncode == 0, stderr
        assert '"event": "leader_acquired"' in stderr
        assert await _holder_app(database_url) is None
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
            elif p is not None and p.stderr is not None and not p.stderr.closed:
                p.stderr.close()


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
