"""`watcher api` with the gateway on its own listener, as an operator starts it: the
gateway's routes and the payer's routes there, the admin routes only on the main one."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devkit import upstream as upstream_kit
from devkit.anvil import free_port
from tests.integration.test_daemon import _env


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_the_gateway_on_its_own_listener_keeps_admin_off_it(
    tmp_path: Path, database_url: str
) -> None:
    await asyncio.to_thread(_own_listener, tmp_path, database_url)


def _own_listener(tmp_path: Path, database_url: str) -> None:
    api_port, gw_port = free_port(), free_port()
    with upstream_kit.running() as up:
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'[upstreams.app]\nurl = "{up.url}"\n\n'
            '[[routes]]\nmethod = "GET"\npath = "/v1/health"\nupstream = "app"\n'
            'upstream_path = "/echo"\nfree = true\n'
        )
        env = _env(
            tmp_path,
            DATABASE_URL=database_url,
            WATCHER_API_PORT=str(api_port),
            WATCHER_GATEWAY_CONFIG=str(config),
            WATCHER_GATEWAY_HOST="127.0.0.1",
            WATCHER_GATEWAY_PORT=str(gw_port),
            X402_ADMIN_KEY="k" * 40,
            X402_BASE_PAYMENT_ADDRESS="0x" + "12" * 20,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "api"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            gw, main = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{api_port}"
            _wait(gw + "/healthz")
            _wait(main + "/healthz")
            admin = {"x-admin-key": "k" * 40, "x-admin-operator": "tester"}
            assert httpx.get(gw + "/v1/health").json()["path"] == "/echo"
            assert httpx.get(gw + "/x402/pricing").status_code == 200  # the payer's routes
            assert httpx.get(gw + "/x402/admin/stats", headers=admin).status_code == 404
            assert httpx.get(main + "/x402/admin/stats", headers=admin).status_code == 200
            assert httpx.get(main + "/v1/health").status_code == 404  # gateway: its own port
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, stderr
