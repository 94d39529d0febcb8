"""Settings: defaults, parsing, and what production refuses (one message, every variable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import cli_env
from watcher import errors
from watcher.keys import estimate_key_bits
from watcher.settings import Settings, load_settings

GOOD_ADMIN = "Vq3m9T_x2Lk8-WcR4pZ7sN1bJ6dF0hY5gE2aU8oI3eQ"  # 43 urlsafe chars = 256 bits
OWNER = "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M"
CHECKSUMMED = "0x91A559D248a216d1dD17C4D39F51bdA9bd1DE7e2"

PLACEHOLDERS = {
    "X402_ADMIN_KEY": "dev_admin_key_change_in_production",
    "X402_BASE_PAYMENT_ADDRESS": "0xYOUR_BASE_ADDRESS",
    "X402_SOLANA_PAYMENT_ADDRESS": "YOUR_SOLANA_ADDRESS_HERE",
    "STRIPE_SECRET_KEY": "sk_test_YOUR_STRIPE_KEY_HERE",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


def test_defaults_match_the_seed() -> None:
    s = load_settings()
    assert (s.evm_chain("base").confirmations, s.evm_chain("ethereum").confirmations) == (6, 12)
    assert s.solana_chain("solana").commitment == "finalized"
    assert s.min_payment_units == 100_000 and s.price_per_call_units == 100_000
    assert s.x402_token_expiry_hours == 24
    assert s.evm_chain("base").usdc == "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"
    assert s.evm_chain("ethereum").usdc == "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
    assert s.solana_chain("solana").usdc_mint == "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
    assert (s.watcher_api_host, s.watcher_api_port, s.watcher_metrics_port) == (
        "127.0.0.1",
        8000,
        9102,
    )
    assert not s.evm_chain("base").enabled and not s.solana_chain("solana").enabled


def test_rpc_lists_keep_fallback_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_BASE_RPC_URL", "https://a.example/k1, https://b.example ,")
    monkeypatch.setenv("X402_BASE_WS_URL", "wss://a.example/ws")
    monkeypatch.setenv("X402_BASE_PAYMENT_ADDRESS", CHECKSUMMED)
    s = load_settings()
    assert s.evm_chain("base").rpc_urls == ("https://a.example/k1", "https://b.example")
    assert s.evm_chain("base").ws_urls == ("wss://a.example/ws",)
    assert s.evm_chain("base").receivers == (CHECKSUMMED.lower(),)
    assert s.evm_chain("base").enabled


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("X402_PRICE_PER_CALL=0.25\nX402_ETHEREUM_CONFIRMATIONS=3\n")
    s = load_settings()
    assert s.price_per_call_units == 250_000 and s.evm_chain("ethereum").confirmations == 3


def test_placeholders_accepted_in_development_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in PLACEHOLDERS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("X402_BASE_RPC_URL", "http://127.0.0.1:8545")
    s = load_settings()
    assert s.evm_chain("base").receivers == () and not s.evm_chain("base").enabled
    assert s.solana_chain("solana").owner is None
    assert s.admin_key() is None


def test_placeholders_refused_in_production_all_in_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHER_ENV", "production")
    for k, v in PLACEHOLDERS.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    text = str(info.value)
    for name in PLACEHOLDERS:
        assert name in text
    assert "dev_admin_key_change_in_production" not in text  # secrets are never echoed
    assert "sk_test_YOUR" not in text


def test_malformed_values_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_ENV", "production")
    monkeypatch.setenv("X402_ADMIN_KEY", "short-key")
    monkeypatch.setenv("X402_BASE_PAYMENT_ADDRESS", CHECKSUMMED.replace("A559D", "a559D"))
    monkeypatch.setenv("X402_ETHEREUM_PAYMENT_ADDRESS", "0x1234")
    monkeypatch.setenv("X402_SOLANA_PAYMENT_ADDRESS", OWNER[:-4])
    monkeypatch.setenv("X402_BASE_RPC_URL", "localhost:8545")
    monkeypatch.setenv("X402_PRICE_PER_CALL", "0.0000001")
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    problems = info.value.problems
    joined = "\n".join(problems)
    assert "X402_ADMIN_KEY: too weak" in joined and "secrets.token_urlsafe" in joined
    assert "X402_BASE_PAYMENT_ADDRESS" in joined and "checksum" in joined
    assert "X402_ETHEREUM_PAYMENT_ADDRESS" in joined
    assert "X402_SOLANA_PAYMENT_ADDRESS" in joined
    assert "X402_BASE_RPC_URL" in joined
    assert "X402_PRICE_PER_CALL" in joined
    assert len(problems) == 6


def test_production_accepts_a_good_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_ENV", "production")
    monkeypatch.setenv("X402_ADMIN_KEY", GOOD_ADMIN)
    monkeypatch.setenv("X402_BASE_PAYMENT_ADDRESS", CHECKSUMMED)
    monkeypatch.setenv("X402_ETHEREUM_PAYMENT_ADDRESS", CHECKSUMMED.lower())
    monkeypatch.setenv("X402_SOLANA_PAYMENT_ADDRESS", OWNER)
    s = load_settings()
    assert s.production and s.admin_key() == GOOD_ADMIN
    assert s.solana_chain("solana").owner == OWNER


def test_solana_token_accounts_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_SOLANA_PAYMENT_ADDRESS", OWNER)
    extra = "Efc6bp3wVC2iQpewxRmKdZM8vzt9DCFFhL7EiHYNGunv"
    monkeypatch.setenv("X402_SOLANA_TOKEN_ACCOUNTS", f" {extra}, {extra} ")
    assert load_settings().solana_chain("solana").token_accounts == (extra,)
    monkeypatch.setenv("X402_SOLANA_TOKEN_ACCOUNTS", f"{extra},not-a-key,{OWNER}")
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    (bad, wallet) = info.value.problems
    assert bad.startswith("X402_SOLANA_TOKEN_ACCOUNTS: 'not-a-key' is not a Solana public key")
    assert "lists the wallet itself" in wallet


def test_type_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHER_API_PORT", "eighty")
    monkeypatch.setenv("X402_BASE_CONFIRMATIONS", "0")
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    joined = "\n".join(info.value.problems)
    assert "WATCHER_API_PORT" in joined and "X402_BASE_CONFIRMATIONS" in joined


def test_key_entropy_estimate() -> None:
    assert estimate_key_bits(GOOD_ADMIN) >= 256
    assert estimate_key_bits("a" * 100) < 256
    assert estimate_key_bits("0123456789abcdef" * 4) == 256  # 64 hex chars = 32 bytes
    assert estimate_key_bits("0123456789abcdef" * 3) < 256


def test_secrets_are_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_ADMIN_KEY", GOOD_ADMIN)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_live_abcdef")
    s = Settings()
    assert GOOD_ADMIN not in repr(s) and "sk_live_abcdef" not in repr(s)
