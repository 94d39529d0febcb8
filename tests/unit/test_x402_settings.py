"""Settings for standard x402: the relayer key and facilitator URL are checked at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from solders.keypair import Keypair

from devkit import cli_env
from watcher import errors
from watcher.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


def test_off_by_default() -> None:
    s = load_settings()
    assert s.relayer_key() is None and s.x402_facilitator_url is None


def test_a_relayer_key_is_read_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "0x" + "4c" * 32
    monkeypatch.setenv("X402_RELAYER_PRIVATE_KEY", key)
    s = load_settings()
    assert s.relayer_key() == key
    assert key not in repr(s) and key not in str(s.model_dump())


def test_a_malformed_relayer_key_and_facilitator_url_are_refused_in_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("X402_RELAYER_PRIVATE_KEY", "0x1234")
    monkeypatch.setenv("X402_FACILITATOR_URL", "ftp://facilitator.example")
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "X402_RELAYER_PRIVATE_KEY" in text and "0x1234" not in text
    assert "X402_FACILITATOR_URL" in text


def test_the_solana_fee_payer_key_reads_base58_and_json_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kp = Keypair()
    for text in (str(kp), json.dumps(list(bytes(kp)))):
        monkeypatch.setenv("X402_SOLANA_FEE_PAYER_PRIVATE_KEY", text)
        s = load_settings()
        assert s.solana_fee_payer_secret("solana") == bytes(kp)
        assert str(kp) not in repr(s) and str(kp) not in str(s.model_dump())
    assert load_settings().x402_solana_network == "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"


@pytest.mark.parametrize(
    "key",
    [
        "not-base58-0OIl",
        str(Keypair().pubkey()),  # a public key (32 bytes), not a keypair
        json.dumps([1, 2, 3]),
        json.dumps(list(bytes(Keypair()))[:32] + list(bytes(Keypair()))[32:][::-1]),  # halves
    ],
)
def test_a_malformed_fee_payer_key_or_network_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("X402_SOLANA_FEE_PAYER_PRIVATE_KEY", key)
    monkeypatch.setenv("X402_SOLANA_NETWORK", "solana-devnet")
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "X402_SOLANA_FEE_PAYER_PRIVATE_KEY" in text and key not in text
    assert "X402_SOLANA_NETWORK" in text and "solana:5eykt4" in text
