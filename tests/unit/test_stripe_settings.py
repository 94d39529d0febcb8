"""A Stripe key is refused at start without the webhook secret and prices the rail needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit import cli_env
from watcher import errors
from watcher.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


def test_half_configured_stripe_is_refused_with_every_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "pk_test_publishable")
    with pytest.raises(errors.ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "STRIPE_SECRET_KEY: not a Stripe secret key" in text
    assert "STRIPE_WEBHOOK_SECRET: required" in text
    assert "STRIPE_PRICE_ID_PRO|TEAM|ENTERPRISE: none set" in text
    assert "pk_test_publishable" not in text  # a secret's value is never echoed


def test_complete_stripe_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_abc")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_abc")
    monkeypatch.setenv("STRIPE_PRICE_ID_TEAM", "price_team")
    monkeypatch.setenv("STRIPE_AUTOMATIC_TAX", "true")
    s = load_settings()
    assert s.stripe_automatic_tax is True
    assert s.stripe_past_due_grace_hours == 72


def test_placeholder_stripe_key_in_development_means_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_YOUR_STRIPE_KEY_HERE")
    assert load_settings().stripe_secret_key is not None  # loads: the rail simply stays off
