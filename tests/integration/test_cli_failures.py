"""Starts that cannot happen, as an operator meets them: the real `watcher` command.

Each failure exits 2 (a value that cannot work) or 1 (a condition of the moment), names
the variable and the fix in one message, and shows a traceback only under --debug.
The ports a test needs taken it holds itself, on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit import cli_env
from devkit.anvil import free_port
from devkit.pg import SessionPostgres, with_database
from watcher import settings as cfg
from watcher.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "k" * 8 + "0123456789abcdefghijklmnopqrstuvwxyzABCDEF"  # > 256 bits
BASE_ADDRESS = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = cli_env.process_env(tmp_path)
    env.update(
        WATCHER_LOG_FORMAT="json",
        WATCHER_API_PORT=str(free_port()),
        WATCHER_METRICS_PORT=str(free_port()),
    )
    env.update(extra)
    return env


def _watcher(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return cli_env.run(tmp_path, env, *args)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 this test holds without listening: a connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_malformed_database_url_exits_2_naming_it_as_typed(tmp_path: Path) -> None:
    env = _env(tmp_path, DATABASE_URL="localhost:5432/x")
    for command in ("run", "api", "migrate"):
        proc = _watcher(tmp_path, env, command)
        assert proc.returncode == 2, proc.stderr
        assert "DATABASE_URL: 'localhost:5432/x' is not a PostgreSQL URL" in proc.stderr
        assert "postgresql://user:password@host:5432/dbname" in proc.stderr
        assert "Traceback" not in proc.stderr
    env["DATABASE_URL"] = "postgres://watcher:hunter2@db.internal:54x2/ledger"
    proc = _watcher(tmp_path, env, "service-key", "list")
    assert proc.returncode == 2, proc.stderr
    assert "'postgres://watcher:***@db.internal:54x2/ledger'" in proc.stderr
    assert "hunter2" not in proc.stderr
    assert not (tmp_path / "data").exists()  # nothing started


def test_a_database_that_does_not_answer_exits_1_naming_url_address_and_fix(
    tmp_path: Path, silent_port: int
) -> None:
    dsn = f"postgresql://watcher:hunter2@127.0.0.1:{silent_port}/ledger"
    env = _env(tmp_path, DATABASE_URL=dsn)
    for command in ("migrate", "run"):
        proc = _watcher(tmp_path, env, command)
        assert proc.returncode == 1, proc.stderr
        said = proc.stderr
        assert (
            f"watcher: DATABASE_URL (postgresql://watcher:***@127.0.0.1:{silent_port}/ledger)"
            in (said)
        )
        assert f"nothing answers at 127.0.0.1:{silent_port} (Connection refused)" in said
        assert "start PostgreSQL there" in said and "unset DATABASE_URL" in said
        assert "watcher doctor" in said
        assert "hunter2" not in said and "Traceback" not in said
    debug = _watcher(tmp_path, env, "--debug", "migrate")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "ConnectionRefusedError" in debug.stderr
    assert "hunter2" not in debug.stderr
    assert "Traceback" in _watcher(tmp_path, env, "migrate", "--debug").stderr


def test_an_unknown_database_exits_1_saying_how_to_create_it(
    tmp_path: Path, postgres: SessionPostgres
) -> None:
    env = _env(tmp_path, DATABASE_URL=with_database(postgres.admin_dsn, "no_such_ledger"))
    proc = _watcher(tmp_path, env, "migrate")
    assert proc.returncode == 1, proc.stderr
    assert "DATABASE_URL" in proc.stderr and 'database "no_such_ledger" does not exist' in (
        proc.stderr
    )
    assert "createdb" in proc.stderr and "Traceback" not in proc.stderr


def test_a_port_in_use_exits_1_before_anything_starts(tmp_path: Path, taken_port: int) -> None:
    cases = [
        ("run", {"WATCHER_API_PORT": str(taken_port)}, "WATCHER_API_PORT"),
        ("run", {"WATCHER_METRICS_PORT": str(taken_port)}, "WATCHER_METRICS_PORT"),
        (
            "api",
            {"WATCHER_GATEWAY_HOST": "127.0.0.1", "WATCHER_GATEWAY_PORT": str(taken_port)},
            "WATCHER_GATEWAY_PORT",
        ),
    ]
    for command, extra, variable in cases:
        proc = _watcher(tmp_path, _env(tmp_path, **extra), command)
        assert proc.returncode == 1, proc.stderr
        assert (
            f"watcher: {variable} {taken_port} on 127.0.0.1 is already in use; stop the other "
            "process"
        ) in proc.stderr
        assert f"or set {variable} to a free port" in proc.stderr
        assert "Traceback" not in proc.stderr and "task_crashed" not in proc.stderr
        assert "daemon_started" not in proc.stderr
        assert not (tmp_path / "data").exists()  # bound before the database starts


def test_development_warns_of_each_placeholder_and_half_set_up_network(
    tmp_path: Path, taken_port: int
) -> None:
    """`cp .env.example .env` then `watcher run`: one warning per variable read as unset.
    The API port is taken so the start stops right after the warnings."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    placeholders = {
        name
        for name, _, value in (
            line.partition("=") for line in (tmp_path / ".env").read_text().splitlines()
        )
        if not name.startswith("#") and cfg.is_placeholder(value.strip())
    }
    assert {"X402_ADMIN_KEY", "X402_BASE_PAYMENT_ADDRESS", "X402_BASE_RPC_URL"} <= placeholders
    env = _env(
        tmp_path,
        WATCHER_API_PORT=str(taken_port),
        X402_ETHEREUM_RPC_URL="http://127.0.0.1:1",
        X402_ETHEREUM_PAYMENT_ADDRESS="",
    )
    proc = _watcher(tmp_path, env, "run")
    assert proc.returncode == 1 and "WATCHER_API_PORT" in proc.stderr
    for name in placeholders - {"X402_ETHEREUM_PAYMENT_ADDRESS", "X402_ETHEREUM_RPC_URL"}:
        assert f'"variable": "{name}", "fix": "{name} holds a placeholder' in proc.stderr
    assert '"variable": "X402_ETHEREUM_PAYMENT_ADDRESS"' in proc.stderr
    assert "Ethereum is not followed although X402_ETHEREUM_RPC_URL is set" in proc.stderr
    assert '"event": "no_network_followed"' in proc.stderr


def test_an_unusable_data_dir_exits_2_naming_it(tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    for data_dir, said in (
        (a_file, f"'{a_file}' is a file, not a directory"),
        (a_file / "sub", f"'{a_file / 'sub'}' is under '{a_file}', a file"),
    ):
        for command in ("run", "migrate"):
            proc = _watcher(tmp_path, _env(tmp_path, WATCHER_DATA_DIR=str(data_dir)), command)
            assert proc.returncode == 2, proc.stderr
            assert f"WATCHER_DATA_DIR: {said}" in proc.stderr
            assert "point WATCHER_DATA_DIR at a directory" in proc.stderr
            assert "Traceback" not in proc.stderr


def test_a_url_without_scheme_is_shown_as_typed(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        X402_BASE_RPC_URL="localhost:8545",
        X402_BASE_WS_URL="localhost:8546",
        X402_ETHEREUM_RPC_URL="https://eth.example.com/v2/SECRETKEY,ftp://eth2.example.com",
    )
    proc = _watcher(tmp_path, env, "run")
    assert proc.returncode == 2, proc.stderr
    said = proc.stderr
    assert "X402_BASE_RPC_URL: 'localhost:8545' is not a http/https URL; add http://" in said
    assert "X402_BASE_WS_URL: 'localhost:8546' is not a ws/wss URL; add ws://" in said
    assert "X402_ETHEREUM_RPC_URL: 'ftp://eth2.example.com' is not a http/https URL" in said
    assert "localhost://?" not in said and "SECRETKEY" not in said


def test_production_run_refuses_to_follow_nothing_but_api_starts(tmp_path: Path) -> None:
    prod = {"WATCHER_ENV": "production", "X402_ADMIN_KEY": ADMIN_KEY}
    half = _env(
        tmp_path,
        **prod,
        X402_BASE_PAYMENT_ADDRESS=BASE_ADDRESS,
        X402_SOLANA_RPC_URL="https://solana.example.com",
    )
    proc = _watcher(tmp_path, half, "run")
    assert proc.returncode == 2, proc.stderr
    assert "X402_BASE_RPC_URL: not set, so Base is not followed although " in proc.stderr
    assert "X402_SOLANA_PAYMENT_ADDRESS: not set, so Solana is not followed" in proc.stderr
    nothing = _env(tmp_path, **prod)
    proc = _watcher(tmp_path, nothing, "run", "--no-api")
    assert proc.returncode == 2, proc.stderr
    assert "no network is set up, so `watcher run` would follow nothing" in proc.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started
    # `watcher api` alone follows nothing by design: it starts.
    api = subprocess.Popen(
        [sys.executable, "-m", "watcher", "api"],
        env=half,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _healthy(f"http://127.0.0.1:{half['WATCHER_API_PORT']}/healthz", api)
        api.send_signal(signal.SIGTERM)
        _, stderr = api.communicate(timeout=20)
    finally:
        if api.poll() is None:
            api.kill()
            api.communicate()
    assert api.returncode == 0, stderr


def _healthy(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


def test_each_command_has_a_description_and_run_help_says_it(tmp_path: Path) -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    for name, sub in dict(commands).items():
        assert sub.description, f"`watcher {name} --help` has no description"
    proc = _watcher(tmp_path, _env(tmp_path), "run", "--help")
    assert proc.returncode == 0
    assert "follow every network" in proc.stdout and "--debug" in proc.stdout
    assert "exit codes: 0 ok, 1 runtime failure" in proc.stdout
