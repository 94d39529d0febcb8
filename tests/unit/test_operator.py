"""The operator name every admin action carries (watcher/operator.py)."""

from __future__ import annotations

import pytest

from watcher import errors, operator


@pytest.mark.parametrize("name", ["alice", "alice@example.com", " Bob Smith ", "ops-bot_2.0+x"])
def test_valid_names_are_kept_stripped(name: str) -> None:
    assert operator.validate(name) == name.strip()


@pytest.mark.parametrize("name", ["", "   ", "-alice", "a" * 65, "eve\nroot", "bob;drop", "é"])
def test_invalid_names_are_refused(name: str) -> None:
    assert operator.validate(name) is None


def test_cli_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(operator.ENV, "env-person")
    assert operator.from_cli("flag-person") == "flag-person"
    assert operator.from_cli(None) == "env-person"


def test_cli_without_a_name_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(operator.ENV, raising=False)
    with pytest.raises(errors.ConfigError, match="--operator NAME or set WATCHER_OPERATOR"):
        operator.from_cli(None)
    with pytest.raises(errors.ConfigError, match="is not an operator name"):
        operator.from_cli("x\ty")
