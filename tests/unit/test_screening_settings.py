"""The screening settings (issue 16): variables, validation, the screen they describe."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from devkit import cli_env
from watcher import errors, networks
from watcher.screening import core, settings_screen
from watcher.settings import load_settings

OFAC = Path(__file__).resolve().parents[1] / "fixtures" / "ofac"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)


def test_the_defaults_hold_old_payments_only() -> None:
    screen = settings_screen.from_settings(load_settings())
    assert screen == core.Screen(max_age=timedelta(days=7))
    assert settings_screen.oracle_from_settings(load_settings()) is None


def test_each_rule_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_DENYLIST_FILE", str(OFAC / "sdn.csv"))
    monkeypatch.setenv("X402_HOLD_ABOVE_USD", "499.999999")
    monkeypatch.setenv("X402_MAX_PAYMENT_AGE_DAYS", "0")
    monkeypatch.setenv("X402_SANCTIONS_ORACLE", "true")
    screen = settings_screen.from_settings(load_settings())
    assert screen.hold_above == 499_999_999 and screen.max_age is None
    assert screen.denylist is not None
    assert screen.denylist.lookup("0x7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c") is not None
    with_oracle = {r.name for r in networks.of_family("evm") if r.sanctions_oracle}
    assert screen.oracle_chains == frozenset(with_oracle)
    assert {"base", "ethereum"} <= with_oracle and "sepolia" not in with_oracle


def test_the_registry_rows_carry_chainalysis_addresses() -> None:
    assert networks.get("base").sanctions_oracle == networks.CHAINALYSIS_ORACLE_BASE
    for name in ("ethereum", "arbitrum", "optimism", "polygon", "avalanche"):
        assert networks.get(name).sanctions_oracle == networks.CHAINALYSIS_ORACLE
    assert all(r.sanctions_oracle is None for r in networks.NETWORKS.values() if r.testnet)


def test_a_network_override_points_the_oracle_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    mock = "0x" + "ab" * 20
    monkeypatch.setenv("X402_SANCTIONS_ORACLE", "true")
    monkeypatch.setenv("X402_SEPOLIA_SANCTIONS_ORACLE_ADDRESS", mock)
    monkeypatch.setenv("X402_SEPOLIA_RPC_URL", "http://127.0.0.1:9")
    s = load_settings()
    assert s.evm_chain("sepolia").sanctions_oracle == mock
    assert "sepolia" in settings_screen.oracle_chains(s)
    found = settings_screen.oracle_from_settings(s)
    assert found is not None and found.chains == frozenset({"sepolia"})  # the one with an RPC
    assert found.targets["sepolia"].contract == mock


def test_the_oracle_stays_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X402_BASE_RPC_URL", "http://127.0.0.1:9")
    s = load_settings()
    assert settings_screen.oracle_chains(s) == frozenset()
    assert settings_screen.oracle_from_settings(s) is None


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("X402_HOLD_ABOVE_USD", "0.0000001", "X402_HOLD_ABOVE_USD: 1E-7 has more than 6 decimal"),
        ("X402_HOLD_ABOVE_USD", "-5", "X402_HOLD_ABOVE_USD: must not be negative"),
        ("X402_DENYLIST_FILE", "/nonexistent/deny.txt", "X402_DENYLIST_FILE: /nonexistent/deny"),
        ("X402_MAX_PAYMENT_AGE_DAYS", "-1", "X402_MAX_PAYMENT_AGE_DAYS"),
        ("X402_BASE_SANCTIONS_ORACLE_ADDRESS", "0x1234", "X402_BASE_SANCTIONS_ORACLE_ADDRESS"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(errors.ConfigError) as caught:
        load_settings()
    assert any(p.startswith(said) for p in caught.value.problems), caught.value.problems


def test_a_malformed_deny_list_stops_the_start_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("hello\n")
    monkeypatch.setenv("X402_DENYLIST_FILE", str(path))
    s = load_settings()  # readable: the settings pass; reading it at start does not
    with pytest.raises(errors.ConfigError, match=r"X402_DENYLIST_FILE: .*deny.txt line 1"):
        settings_screen.from_settings(s)
