"""The five production blockers of the seed, each a doctor row an operator can read:
placeholder Stripe keys, the webhook secret, payment addresses, the admin key and free
public RPC endpoints (docs/going-live.md lists the rows). Run as an operator runs it
(``python -m watcher doctor``) before and after, and through ``doctor.examine`` with
the RPC transport faked where the endpoint is a public host this test must not reach."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from devkit.anvil import Anvil, Token
from tests.integration import test_doctor_remote as remote
from tests.integration.test_daemon import _env
from tests.integration.test_doctor import PLACEHOLDERS, STRONG_KEY
from watcher import doctor
from watcher.doctor import config, public_rpc
from watcher.doctor.report import Check
from watcher.settings import Settings

fake_stripe = remote.fake_stripe  # the fixture, shared
BLOCKERS = (
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "X402_BASE_PAYMENT_ADDRESS",
    "X402_ADMIN_KEY",
    "X402_BASE_RPC_URL",
)
RECEIVER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _by_name(rows: list[Check] | list[dict[str, Any]]) -> dict[str, Any]:
    return {(r["name"] if isinstance(r, dict) else r.name): r for r in rows}


async def _doctor(tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """``python -m watcher doctor`` twice (JSON, then the table), without blocking the loop
    the fake Stripe API is served on."""
    outs = []
    for args in (["--json"], []):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "watcher", "doctor", "--timeout", "3", *args,
            env=_env(tmp_path, **env), cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert b"Traceback" not in err, err.decode()
        outs.append((proc.returncode, out.decode()))
    assert outs[0][0] == outs[1][0]
    return int(outs[0][0] or 0), json.loads(outs[0][1]), outs[1][1]


async def test_the_five_blockers_fail_then_pass_once_fixed(
    tmp_path: Path,
    anvil: Anvil,
    usdc: Token,
    database_url: str,
    fake_stripe: remote.FakeStripe,
) -> None:
    base = {"X402_BASE_CHAIN_ID": "31337", "X402_BASE_USDC_ADDRESS": usdc.checksum}
    before_env = {**PLACEHOLDERS, **base, "X402_BASE_RPC_URL": anvil.url}
    before_env.pop("X402_ETHEREUM_RPC_URL")
    code, before, table = await _doctor(tmp_path, before_env)
    assert code == 1 and before["ready"] is False
    rows = _by_name(before["checks"])
    for name in BLOCKERS[:4]:
        assert rows[name]["status"] == "fail" and rows[name]["fix"], rows[name]
        assert f"✗ {name}" in table
    assert "NOT production-ready" in table.splitlines()[-1]

    for tier, price in remote.PRICES.items():
        fake_stripe.prices[price] = remote._price(price, config.STRIPE_PRICES_CENTS[tier])
    after_env = {
        **base,
        "WATCHER_ENV": "production",
        "DATABASE_URL": database_url,
        "X402_ADMIN_KEY": STRONG_KEY,
        "X402_BASE_PAYMENT_ADDRESS": anvil.accounts[1],
        "X402_BASE_RPC_URL": f"{anvil.url},{anvil.url}/",  # a fallback, as the guide asks
        "STRIPE_SECRET_KEY": remote.LIVE_KEY,
        "STRIPE_WEBHOOK_SECRET": "whsec_0123456789abcdefghijklmnop",
        "STRIPE_API_BASE": fake_stripe.url,
        **{f"STRIPE_PRICE_ID_{t.upper()}": p for t, p in remote.PRICES.items()},
    }
    code, after, table = await _doctor(tmp_path, after_env)
    rows = _by_name(after["checks"])
    failed = [r for r in after["checks"] if r["status"] == "fail"]
    assert failed == [] and code == 0 and after["ready"] is True, failed
    for name in BLOCKERS:
        assert rows[name]["status"] == "ok", rows[name]
        assert f"✓ {name}" in table
    assert rows["Stripe API"]["status"] == "ok"
    assert rows["WATCHER_PUBLIC_URL"]["status"] == "warn"  # production without it
    assert "NOT" not in table.splitlines()[-1] and "production-ready" in table.splitlines()[-1]


def _unreachable(request: httpx.Request) -> httpx.Response:
    # The seam: public hosts are never contacted by the tests.
    raise httpx.ConnectError("not contacted in tests", request=request)


async def test_public_rpc_endpoints_warn_in_development_and_fail_in_production(
    database_url: str,
) -> None:
    dev = Settings(
        _env_file=None,
        database_url=database_url,
        x402_base_payment_address=RECEIVER,
        x402_base_rpc_url="https://base-mainnet.g.alchemy.com/v2/KEY,https://mainnet.base.org",
        x402_solana_payment_address="9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM",
        x402_solana_rpc_url=(
            "https://mainnet.helius-rpc.com/?api-key=KEY,https://solana-mainnet.g.alchemy.com/v2/KEY"
        ),
        x402_solana_ws_url="wss://api.mainnet-beta.solana.com",
    )
    transport = httpx.MockTransport(_unreachable)
    prod = dev.model_copy(update={"watcher_env": "production"})
    for settings, status in ((dev, "warn"), (prod, "fail")):
        examined = doctor.examine(settings, seconds=2.0, transport=transport)
        rows = _by_name(await asyncio.wait_for(examined, 60))
        rpc, ws = rows["X402_BASE_RPC_URL"], rows["X402_SOLANA_WS_URL"]
        assert (rpc.status, ws.status) == (status, status)
        assert rpc.fix == public_rpc.ADVICE == "rate-limited, no SLA: use a provider's keyed URL"
        assert rpc.value == "https://mainnet.base.org (public, Base)"
        assert "KEY" not in rpc.value + ws.value
        assert rows["X402_SOLANA_RPC_URL"].status == "ok"  # a keyed provider URL


def test_payment_addresses_are_set_valid_and_real_wherever_an_rpc_url_is() -> None:
    s = Settings(
        _env_file=None,
        x402_ethereum_rpc_url="https://a.example/v2/K,https://b.example",
        x402_base_rpc_url="https://a.example/v2/K,https://b.example",
        x402_base_payment_address=RECEIVER.lower().replace("c8", "C8"),  # broken checksum
        x402_solana_rpc_url="https://a.example/v2/K,https://b.example",
        x402_solana_payment_address="YOUR_SOLANA_ADDRESS_HERE",
    )
    rows = _by_name(config.settings_checks(s))
    unset = rows["X402_ETHEREUM_PAYMENT_ADDRESS"]
    assert unset.status == "fail" and "X402_ETHEREUM_RPC_URL is set" in unset.fix
    bad = rows["X402_BASE_PAYMENT_ADDRESS"]
    assert bad.status == "fail" and "checksum" in bad.fix.lower(), bad
    assert rows["X402_SOLANA_PAYMENT_ADDRESS"].status == "fail"


def test_no_network_taking_payments_is_a_failure() -> None:
    rows = _by_name(config.settings_checks(Settings(_env_file=None)))
    none = rows["X402_*_PAYMENT_ADDRESS"]
    assert none.status == "fail" and "X402_BASE_PAYMENT_ADDRESS" in none.fix
    one = Settings(
        _env_file=None,
        x402_base_payment_address=RECEIVER,
        x402_base_rpc_url="https://a.example/v2/K,https://b.example",
    )
    assert "X402_*_PAYMENT_ADDRESS" not in _by_name(config.settings_checks(one))


def test_public_url_unset_is_a_warning_in_production_only() -> None:
    dev = Settings(_env_file=None)
    assert _by_name(config.settings_checks(dev))["WATCHER_PUBLIC_URL"].status == "ok"
    prod = dev.model_copy(update={"watcher_env": "production"})
    row = _by_name(config.settings_checks(prod))["WATCHER_PUBLIC_URL"]
    assert row.status == "warn" and "Host header" in row.fix
    set_ = prod.model_copy(update={"watcher_public_url": "https://pay.example.com"})
    row = _by_name(config.settings_checks(set_))["WATCHER_PUBLIC_URL"]
    assert (row.status, row.value) == ("ok", "https://pay.example.com")
