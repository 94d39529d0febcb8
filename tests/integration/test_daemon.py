"""`watcher run` as an operator starts it: embedded PostgreSQL, API, metrics, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devkit.anvil import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    env.update(WATCHER_DATA_DIR=str(tmp_path / "data"), WATCHER_LOG_FORMAT="json", **extra)
    return env


def _wait_http(url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_run_serves_health_and_metrics_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    api_port, metrics_port = free_port(), free_port()
    env = _env(tmp_path, WATCHER_API_PORT=str(api_port), WATCHER_METRICS_PORT=str(metrics_port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = _wait_http(f"http://127.0.0.1:{api_port}/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["database"] == "ok"
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert "watcher_up 1.0" in scraped
        assert "watcher_up 1.0" in httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).text
        pgdata = tmp_path / "data" / "pgdata"
        assert (pgdata / "postmaster.pid").exists()

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
        elapsed = time.monotonic() - started
        code = proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, stderr
    assert elapsed < 10
    assert not (pgdata / "postmaster.pid").exists(), "embedded PostgreSQL still running"
    assert '"event": "daemon_stopped"' in stderr


def test_restart_reuses_the_embedded_database(tmp_path: Path) -> None:
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "watcher", "migrate"],
            env=_env(tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "up to date" in proc.stdout
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
