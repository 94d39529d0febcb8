"""`watcher doctor` against real parts: anvil, PostgreSQL, a fake Stripe over real HTTP,
and a Solana node faked at the RPC transport seam."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.anvil import Anvil, Token, free_port
from devkit.pg import SessionPostgres
from tests.integration.test_daemon import _env
from watcher import doctor
from watcher.doctor import report
from watcher.doctor.report import Check
from watcher.settings import Settings

STRONG_KEY = "Jx1f0CwV7Rk2sQm9Tz4bYp8LhN3aG6dE5uKiOcWqXyZ"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def _row(rows: list[Check], name: str) -> Check:
    found = [r for r in rows if r.name == name]
    assert len(found) == 1, f"{name}: {[r.name for r in rows]}"
    return found[0]


async def _examine(settings: Settings, **kw: Any) -> list[Check]:
    return await asyncio.wait_for(doctor.examine(settings, **kw), 60)


def _doctor_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", "doctor", *args],
        env=_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )


PLACEHOLDERS = {
    "WATCHER_ENV": "production",
    "X402_ADMIN_KEY": "dev_admin_key_change_in_production",
    "X402_BASE_PAYMENT_ADDRESS": "0xYOUR_BASE_ADDRESS",
    "X402_ETHEREUM_PAYMENT_ADDRESS": "0xYOUR_ETHEREUM_ADDRESS",
    "X402_ETHEREUM_RPC_URL": "https://YOUR_ETHEREUM_RPC_HERE",
    "X402_SOLANA_PAYMENT_ADDRESS": "YOUR_SOLANA_ADDRESS_HERE",
    "STRIPE_SECRET_KEY": "sk_test_YOUR_STRIPE_KEY_HERE",
    "STRIPE_WEBHOOK_SECRET": "whsec_YOUR_WEBHOOK_SECRET_HERE",
    "STRIPE_PRICE_ID_PRO": "price_YOUR_PRO_PRICE_HERE",
    "STRIPE_PRICE_ID_TEAM": "price_YOUR_TEAM_PRICE_HERE",
    "STRIPE_PRICE_ID_ENTERPRISE": "price_YOUR_ENTERPRISE_PRICE_HERE",
}


def test_placeholder_config_fails_with_a_fix_per_row(tmp_path: Path) -> None:
    refused = free_port()  # nothing listens: connection refused at once
    env = {**PLACEHOLDERS, "X402_BASE_RPC_URL": f"http://127.0.0.1:{refused}"}
    result = _doctor_cli(tmp_path, "--json", "--timeout", "2", **env)
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["ready"] is False and out["score"] < 50
    rows = {c["name"]: c for c in out["checks"]}
    for name in (
        "X402_ADMIN_KEY",
        "X402_BASE_PAYMENT_ADDRESS",
        "X402_ETHEREUM_RPC_URL",
        "X402_SOLANA_PAYMENT_ADDRESS",
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_PRICE_ID_PRO",
    ):
        assert rows[name]["status"] == "fail", name
        assert rows[name]["fix"], f"{name} has no fix"
    assert "secrets.token_urlsafe" in rows["X402_ADMIN_KEY"]["fix"]
    endpoint = rows[f"base http://127.0.0.1:{refused}"]
    assert endpoint["status"] == "fail" and endpoint["fix"]
    # The table says the same for people.
    table = _doctor_cli(tmp_path, "--timeout", "2", **env)
    assert table.returncode == 1
    assert "✗ X402_ADMIN_KEY" in table.stdout
    assert "fix: generate one with" in table.stdout
    assert "NOT production-ready" in table.stdout.splitlines()[-1]


def test_secrets_never_show_in_the_report(tmp_path: Path) -> None:
    secrets = {
        "X402_ADMIN_KEY": STRONG_KEY,
        "STRIPE_SECRET_KEY": "sk_live_51Habcdefghijklmnopqrstuvwx1234",
        "STRIPE_WEBHOOK_SECRET": "whsec_abcdefghijklmnopqrstuvwxyz5678",
        "DATABASE_URL": f"postgresql://watcher:hunter2secret@127.0.0.1:{free_port()}/watcher",
    }
    rows = asyncio.run(
        _examine(_settings(**{k.lower(): v for k, v in secrets.items()}), seconds=2.0)
    )
    text = report.render(rows, _settings()) + report.to_json(rows, _settings())
    for value in (*secrets.values(), "hunter2secret"):
        assert value not in text
    assert "sk_live_…1234" in text and "watcher:***@127.0.0.1" in text
    assert _row(rows, "X402_ADMIN_KEY").status == "ok"
    assert _row(rows, "STRIPE_SECRET_KEY").status == "ok"
    assert _row(rows, "PostgreSQL").status == "fail"  # nothing listens there


async def test_good_evm_config_on_anvil_passes_the_evm_rows(anvil: Anvil, usdc: Token) -> None:
    settings = _settings(
        x402_base_rpc_url=anvil.url,
        x402_base_chain_id=31337,
        x402_base_usdc_address=usdc.checksum,
        x402_base_payment_address=anvil.accounts[1],
    )
    rows = await _examine(settings, seconds=5.0)
    endpoint = _row(rows, f"base http://127.0.0.1:{anvil.port}")
    assert endpoint.status == "ok", endpoint
    assert endpoint.value.startswith("chain 31337, head ")
    contract = _row(rows, "base USDC contract")
    assert contract.status == "ok" and "6 decimals" in contract.value
    assert _row(rows, "X402_BASE_CHAIN_ID").status == "warn"  # not Base mainnet


async def test_a_non_usdc_contract_and_an_empty_address_fail(anvil: Anvil, usdc: Token) -> None:
    rows = await _examine(
        _settings(
            x402_base_rpc_url=anvil.url,
            x402_base_chain_id=31337,
            x402_base_usdc_address="0x" + "11" * 20,
        ),
        seconds=5.0,
    )
    contract = _row(rows, "base USDC contract")
    assert contract.status == "fail" and "no code" in contract.value
    assert "X402_BASE_USDC_ADDRESS" in contract.fix


async def test_wrong_chain_id_fails(anvil: Anvil, usdc: Token) -> None:
    settings = _settings(x402_base_rpc_url=anvil.url, x402_base_chain_id=8453)
    rows = await _examine(settings, seconds=5.0)
    endpoint = _row(rows, f"base http://127.0.0.1:{anvil.port}")
    assert endpoint.status == "fail"
    assert endpoint.value == "chain id 31337, expected 8453"
    assert "another network" in endpoint.fix
    assert _row(rows, "base USDC contract").status == "fail"


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


async def test_an_endpoint_that_never_answers_times_out_as_a_failure(blackhole: int) -> None:
    settings = _settings(x402_ethereum_rpc_url=f"http://127.0.0.1:{blackhole}")
    rows = await _examine(settings, seconds=1.0)
    endpoint = _row(rows, f"ethereum http://127.0.0.1:{blackhole}")
    assert endpoint.status == "fail"
    assert endpoint.value in ("no answer within 1 s", f"http://127.0.0.1:{blackhole}: timeout")
    assert _row(rows, "ethereum USDC contract").status == "fail"


async def test_database_rows(database_url: str, postgres: SessionPostgres) -> None:
    rows = await _examine(_settings(database_url=database_url), seconds=5.0)
    pg = _row(rows, "PostgreSQL")
    assert pg.status == "ok" and "migrations current" in pg.value
    empty = await postgres.create_empty()
    try:
        rows = await _examine(_settings(database_url=empty), seconds=5.0)
    finally:
        await postgres.drop(empty)
    pg = _row(rows, "PostgreSQL")
    assert pg.status == "fail" and "pending migrations 0001" in pg.value
    assert "watcher migrate" in pg.fix


async def test_a_clean_production_config_is_ready(
    anvil: Anvil, usdc: Token, database_url: str
) -> None:
    settings = _settings(
        watcher_env="production",
        database_url=database_url,
        x402_admin_key=STRONG_KEY,
        x402_base_rpc_url=anvil.url,
        x402_base_chain_id=31337,
        x402_base_usdc_address=usdc.checksum,
        x402_base_payment_address=anvil.accounts[1],
    )
    rows = await _examine(settings, seconds=5.0)
    assert [r for r in rows if r.status == "fail"] == []
    assert report.ready(rows, settings)
    assert "score" in report.render(rows, settings)
    assert not report.ready(rows, settings.model_copy(update={"watcher_env": "development"}))


def test_unreadable_values_are_reported_not_crashed_on(tmp_path: Path) -> None:
    result = _doctor_cli(tmp_path, "--json", WATCHER_API_PORT="eighty", X402_BASE_CHAIN_ID="x")
    assert result.returncode == 1, result.stderr
    rows = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert rows["WATCHER_API_PORT"]["status"] == "fail"
    assert rows["X402_BASE_CHAIN_ID"]["status"] == "fail"
    assert "Traceback" not in result.stderr


async def test_websocket_endpoints_are_probed(anvil: Anvil) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"
    settings = _settings(
        x402_base_rpc_url=anvil.url,
        x402_base_ws_url=f"{anvil.ws_url},{dead}",
        x402_base_chain_id=31337,
    )
    rows = await _examine(settings, seconds=3.0)
    good = _row(rows, f"base ws://127.0.0.1:{anvil.port}")
    assert good.status == "ok" and good.value.startswith("websocket ok")
    bad = _row(rows, f"base {dead}")
    assert bad.status == "fail" and bad.value.startswith("websocket")
    wrong = await _examine(settings.model_copy(update={"x402_base_chain_id": 8453}), seconds=3.0)
    row = _row(wrong, f"base ws://127.0.0.1:{anvil.port}")
    assert row.status == "fail" and row.value == "websocket serves chain 31337, expected 8453"
