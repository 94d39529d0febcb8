"""The doctor's pure parts: masking, score, verdict, table and JSON."""

from __future__ import annotations

import json

from watcher.doctor import config, report
from watcher.doctor.report import Check
from watcher.settings import Settings


def test_masking_hides_passwords_and_secret_bodies() -> None:
    assert report.mask_dsn("postgresql://app:s3cret@db.example:5432/ledger") == (
        "postgresql://app:***@db.example:5432/ledger"
    )
    assert report.mask_dsn("postgresql://db.example/ledger") == "postgresql://db.example/ledger"
    assert report.mask_secret("sk_live_51Habcdefghijklmnop1234") == "sk_live_…1234"
    assert report.mask_secret("short_secret") == "sho… (12 chars)"


def test_score_and_verdict() -> None:
    rows = [
        Check("settings", "A", "ok", ""),
        Check("settings", "B", "warn", "", "fix b"),
        Check("rpc", "C", "fail", "", "fix c"),
    ]
    assert report.score(rows) == 50
    prod = Settings(_env_file=None, watcher_env="production")
    assert not report.ready(rows, prod)
    assert report.ready(rows[:2], prod)
    assert not report.ready(rows[:2], Settings(_env_file=None))
    table = report.render(rows, prod)
    assert "  ✗ C" in table and "\n      fix: fix c\n" in table
    assert "fix a" not in table  # ok rows show no fix
    assert table.splitlines()[-1] == "score 50/100: NOT production-ready (1 ✓, 1 ⚠, 1 ✗)"
    data = json.loads(report.to_json(rows, prod))
    assert data["ready"] is False and data["score"] == 50
    assert [c["status"] for c in data["checks"]] == ["ok", "warn", "fail"]


def test_settings_problems_become_failing_rows_with_fixes() -> None:
    s = Settings(
        _env_file=None,
        x402_base_payment_address="0x52908400098527886E0F7030069857D2E4169Ee7",  # bad checksum
        x402_admin_key="abcabcabcabcabcabcabc",
        x402_base_confirmations=2,
        x402_solana_commitment="confirmed",
        x402_solana_rpc_url="https://sol.example",
    )
    rows = {r.name: r for r in config.settings_checks(s)}
    addr = rows["X402_BASE_PAYMENT_ADDRESS"]
    assert addr.status == "fail" and "checksum" in addr.fix
    key = rows["X402_ADMIN_KEY"]
    assert key.status == "fail" and "bits" in key.value and "token_urlsafe" in key.fix
    assert rows["X402_BASE_CONFIRMATIONS"].status == "warn"
    assert rows["X402_SOLANA_COMMITMENT"].status == "warn"
    assert rows["WATCHER_ENV"].status == "warn"


def test_a_look_alike_usdc_on_mainnet_fails() -> None:
    s = Settings(
        _env_file=None,
        x402_base_usdc_address="0x" + "12" * 20,
        x402_base_rpc_url="https://b.example",
    )
    row = {r.name: r for r in config.settings_checks(s)}["X402_BASE_USDC_ADDRESS"]
    assert row.status == "fail" and "look-alike" in row.fix


def test_a_chain_left_unconfigured_is_one_warning() -> None:
    rows = [r for r in config.settings_checks(Settings(_env_file=None)) if "ETHEREUM" in r.name]
    assert [(r.name, r.status) for r in rows] == [("X402_ETHEREUM_*", "warn")]
    assert "X402_ETHEREUM_PAYMENT_ADDRESS and X402_ETHEREUM_RPC_URL" in rows[0].fix


def test_receiving_without_rpc_fails_and_plain_http_to_a_remote_host_warns() -> None:
    s = Settings(
        _env_file=None,
        x402_base_payment_address="0x" + "ab" * 20,
        x402_ethereum_rpc_url="http://eth.example.com/v2/KEY,https://eth2.example.com",
    )
    rows = {r.name: r for r in config.settings_checks(s)}
    assert rows["X402_BASE_RPC_URL"].status == "fail"
    eth = rows["X402_ETHEREUM_RPC_URL"]
    assert eth.status == "warn" and "use https" in eth.fix
    assert "KEY" not in eth.value
    local = Settings(_env_file=None, x402_base_rpc_url="http://127.0.0.1:8545,http://localhost:1")
    row = {r.name: r for r in config.settings_checks(local)}["X402_BASE_RPC_URL"]
    assert row.status == "ok"
