"""The Solana refund wallet's settings: a keypair (as the fee payer's) or, to export unsigned
messages, only an address; both checked at start, the key never shown."""

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
    cli_env.clear(monkeypatch, tmp_path)


def test_off_by_default() -> None:
    s = load_settings()
    assert s.refund_solana_secret() is None and s.refund_solana_address() is None


def test_a_keypair_names_the_wallet_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    kp = Keypair()
    for text in (str(kp), json.dumps(list(bytes(kp)))):
        monkeypatch.setenv("X402_REFUND_SOLANA_KEYPAIR", text)
        s = load_settings()
        assert s.refund_solana_secret() == bytes(kp)
        assert s.refund_solana_address() == str(kp.pubkey())
        assert str(kp) not in repr(s) and str(kp) not in str(s.model_dump())
    monkeypatch.setenv("X402_REFUND_SOLANA_ADDRESS", str(kp.pubkey()))  # agreeing: fine
    assert load_settings().refund_solana_address() == str(kp.pubkey())


def test_an_address_alone_is_a_signer_we_export_for(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = str(Keypair().pubkey())
    monkeypatch.setenv("X402_REFUND_SOLANA_ADDRESS", signer)
    s = load_settings()
    assert s.refund_solana_secret() is None and s.refund_solana_address() == signer


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("X402_REFUND_SOLANA_KEYPAIR", str(Keypair().pubkey()), "32 bytes, a keypair is 64"),
        ("X402_REFUND_SOLANA_KEYPAIR", json.dumps([1, 2, 3]), "solana-keygen"),
        ("X402_REFUND_SOLANA_ADDRESS", "0x" + "ab" * 20, "not a Solana public key"),
    ],
)
def test_malformed_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, says: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(errors.ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert var in text and says in text
    if var.endswith("KEYPAIR"):
        assert value not in text


def test_a_key_and_another_address_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    kp, other = Keypair(), str(Keypair().pubkey())
    monkeypatch.setenv("X402_REFUND_SOLANA_KEYPAIR", str(kp))
    monkeypatch.setenv("X402_REFUND_SOLANA_ADDRESS", other)
    with pytest.raises(errors.ConfigError, match="is not the keypair's address") as info:
        load_settings()
    assert str(kp) not in str(info.value)
