"""`make devnet` + `scripts/pay.py`: what a newcomer runs first works end to end on both chains."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devkit.anvil import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_devnet_pays_claims_and_spends_on_base_and_solana(tmp_path: Path) -> None:
    data = tmp_path / "devnet"
    ports = {
        "--api-port": free_port(),
        "--metrics-port": free_port(),
        "--anvil-port": free_port(),
        "--solana-port": free_port(),
        # Reserved too: the default (HTTP port + 1) may belong to another process.
        "--solana-ws-port": free_port(),
    }
    cmd = [sys.executable, str(ROOT / "scripts" / "devnet.py"), "--data-dir", str(data)]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    devnet = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        state = data / "devnet.json"
        deadline = time.monotonic() + 120
        while not state.exists():
            assert devnet.poll() is None, devnet.stdout.read() if devnet.stdout else ""
            assert time.monotonic() < deadline, "devnet did not come up"
            time.sleep(0.5)
        assert json.loads(state.read_text())["api"].endswith(str(ports["--api-port"]))
        for chain in ("base", "solana"):
            pay = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "pay.py"),
                    "--chain",
                    chain,
                    "--requests",
                    "2",
                    "--state",
                    str(state),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=150,
            )
            assert pay.returncode == 0, pay.stdout + pay.stderr
            lines = pay.stdout.splitlines()
            assert any("invoice credited" in ln for ln in lines)
            assert any(ln.startswith("-> token claimed: 2 calls") for ln in lines)
            assert sum(": 200 " in ln for ln in lines) == 2
            assert "402 Payment Required" in lines[-1]
    finally:
        devnet.send_signal(signal.SIGTERM)
        out, _ = devnet.communicate(timeout=60)
    assert devnet.returncode == 0, out
    assert "devnet stopped" in out
