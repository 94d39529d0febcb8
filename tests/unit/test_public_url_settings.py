"""WATCHER_PUBLIC_URL as load_settings judges it: what is refused, in which mode, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from api import public_url as api_public_url  # the API's side of the same variable
from devkit import cli_env
from watcher import errors, public_url
from watcher.settings import load_settings

GOOD_ADMIN = "Vq3m9T_x2Lk8-WcR4pZ7sN1bJ6dF0hY5gE2aU8oI3eQ"  # 256 bits


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli_env.clear(monkeypatch, tmp_path)  # no stray variables or .env


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("https://api.example.com", ("https", "api.example.com", "")),
        ("https://API.example.com:8443/", ("https", "api.example.com:8443", "")),
        ("https://example.com/pay/", ("https", "example.com", "/pay")),
        ("http://127.0.0.1:8000", ("http", "127.0.0.1:8000", "")),
        ("https://[::1]:8443/pay", ("https", "[::1]:8443", "/pay")),
        ("https://xn--e1afmkfd.example/a%20b", ("https", "xn--e1afmkfd.example", "/a%20b")),
    ],
)
def test_a_public_url_is_taken_apart(text: str, parts: tuple[str, str, str]) -> None:
    assert tuple(public_url.parse(text)) == parts
    assert load_settings(watcher_public_url=text).watcher_public_url == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("api.example.com", "not an absolute http:// or https:// URL"),
        ("localhost:8000", "not an absolute http:// or https:// URL"),
        ("ftp://example.com", "not an absolute http:// or https:// URL"),
        ("https://example.com/?a=1", "has a query or fragment"),
        ("https://example.com/#top", "has a query or fragment"),
        ("https://example.com/pay?", "has a query or fragment"),
        ("https://user:pw@example.com", "has credentials in it"),
        ("https://example.com:port", "not a URL"),
        ("https://example.com/a/../b", "has . or .. in its path"),
        ("https://example.com/%2E%2e/b", "has . or .. in its path"),
        # urlsplit takes each of these as a host or a path; a browser reads some otherwise
        # (a backslash as a slash), and a tab or newline inside would be silently dropped.
        ("https://evil.example\\.example.com", "a backslash"),
        ("https://exa mple.com", "a space"),
        ("https://example.com/pa y", "a space"),
        ("https://api.exa\tmple.com", "a control character"),
        ("https://api.example.com/x\ny", "a control character"),
        ("https://\u0435xample.com", "non-ASCII character in it (give an international name"),
        ("https://example.com%2fevil.com", "has no valid host name, IP address or port"),
        ("https://a_b.example.com", "has no valid host name, IP address or port"),
        ("https://example.com;x", "has no valid host name, IP address or port"),
        ("https://example.com:0", "has no valid host name, IP address or port"),
        ("https://[1.2.3.4]", "not a URL"),
        ('https://example.com/x"><script>', "characters a URL path cannot hold"),
        ("https://example.com/" + "p" * 600, "is longer than 512 characters"),
    ],
)
def test_a_malformed_public_url_is_refused_in_every_mode(text: str, why: str) -> None:
    with pytest.raises(errors.ConfigError) as exc:
        load_settings(watcher_public_url=text)
    (line,) = [p for p in exc.value.problems if p.startswith("WATCHER_PUBLIC_URL")]
    assert why in line and "e.g. https://api.example.com" in line
    assert "pw" not in line  # what the operator typed, minus any credentials
    if "@" not in text:
        assert repr(text) in line


def test_production_takes_https_only() -> None:
    production = {"watcher_env": "production", "x402_admin_key": GOOD_ADMIN}
    with pytest.raises(errors.ConfigError) as exc:
        load_settings(**production, watcher_public_url="http://api.example.com")
    assert [p for p in exc.value.problems if p.startswith("WATCHER_PUBLIC_URL")] == [
        "WATCHER_PUBLIC_URL: 'http://api.example.com' is http in production (tokens and "
        "payment headers would travel in clear); give the https:// address your TLS proxy serves"
    ]
    assert load_settings(**production, watcher_public_url="https://api.example.com/pay")
    assert load_settings(**production).watcher_public_url is None  # unset: allowed, warned


def test_unset_and_empty_mean_the_request_host() -> None:
    assert load_settings().value("watcher_public_url") is None
    assert load_settings(watcher_public_url="").value("watcher_public_url") is None


def test_stripe_return_urls_left_at_their_default_move_under_the_public_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHER_PUBLIC_URL", "https://api.example.com/pay")
    monkeypatch.setenv("STRIPE_CANCEL_URL", "https://shop.example/pricing")
    s = load_settings()
    assert api_public_url.settings_url(s, "stripe_success_url") == (
        "https://api.example.com/pay/api/v1/payments/success"
    )
    assert api_public_url.settings_url(s, "stripe_portal_return_url") == (
        "https://api.example.com/pay/"
    )
    # Set by the operator: as set.
    assert api_public_url.settings_url(s, "stripe_cancel_url") == "https://shop.example/pricing"
    # No public URL: the defaults as before.
    monkeypatch.delenv("WATCHER_PUBLIC_URL")
    s = load_settings()
    assert api_public_url.settings_url(s, "stripe_success_url") == s.stripe_success_url
    assert s.stripe_success_url == "http://127.0.0.1:8000/api/v1/payments/success"
