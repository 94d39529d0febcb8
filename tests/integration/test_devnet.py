"""`make devnet` + `scripts/pay.py`: what a newcomer runs first works end to end on both chains."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

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
        # Paid with the command devnet prints (this interpreter, which has httpx; a bare
        # `python` may not), as a newcomer would copy it.
        printed = _next_command(devnet.stdout)
        assert Path(ROOT, printed[0]) == Path(sys.executable), printed  # relative under ROOT
        assert printed[1] == "scripts/pay.py", printed
        assert printed[printed.index("--state") + 1] == str(state.resolve())
        for chain in ("base", "solana"):
            command = [*printed, "--requests", "2"]
            command[command.index("--chain") + 1] = chain
            pay = subprocess.run(
                command,
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


def _next_command(out: IO[str] | None) -> list[str]:
    """The command in devnet's `next: ...` line (printed once the API answered)."""
    assert out is not None
    seen = []
    for line in out:  # bounded by the test's timeout; the line follows "devnet up"
        seen.append(line)
        if line.startswith("next: "):
            assert any(ln.startswith("devnet up") for ln in seen), seen
            return shlex.split(line.removeprefix("next: ").split("   (or")[0])
    raise AssertionError(f"no next: line in {seen}")


def _devnet(tmp_path: Path, ports: dict[str, int], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "devnet.py"), "--data-dir", str(tmp_path / "d")]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    return subprocess.run(
        [*cmd, *extra], cwd=ROOT, capture_output=True, text=True, timeout=150, check=False
    )


def _free_ports() -> dict[str, int]:
    return {
        flag: free_port()
        for flag in (
            "--api-port",
            "--metrics-port",
            "--anvil-port",
            "--solana-port",
            "--solana-ws-port",
        )
    }


@pytest.mark.parametrize("flag", ["--api-port", "--metrics-port", "--solana-ws-port"])
def test_a_port_taken_by_another_process_is_named_before_anything_starts(
    tmp_path: Path, flag: str
) -> None:
    ports = _free_ports()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports[flag] = squatter.getsockname()[1]
        run = _devnet(tmp_path, ports)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"port {ports[flag]}" in run.stderr and "is taken by another process" in run.stderr
    assert f"with {flag}" in run.stderr  # the flag that moves it
    assert "devnet up" not in run.stdout and "Traceback" not in run.stderr
    assert not (tmp_path / "d").exists()  # nothing started, nothing written


@pytest.mark.timeout(200)
def test_a_watcher_that_cannot_start_is_reported_and_devnet_is_never_up(tmp_path: Path) -> None:
    # X402_BASE_CONFIRMATIONS=0 is refused by the watcher's settings: it exits 2 at start.
    run = _devnet(tmp_path, _free_ports(), "--confirmations", "0")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "devnet up" not in run.stdout and "next:" not in run.stdout
    assert "the watcher exited with 2 before its API answered" in run.stderr
    assert "X402_BASE_CONFIRMATIONS" in run.stderr  # the reason, not only in watcher.log
    assert "Traceback" not in run.stderr
    assert "devnet stopped" in run.stdout  # anvil and the Solana node were stopped
