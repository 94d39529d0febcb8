"""Doctor rows about the deployment as a whole: a network that takes payments, the public URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from watcher.doctor.report import Check
from watcher.settings import Settings

HOWTO_RECEIVE = (
    "set X402_BASE_PAYMENT_ADDRESS and X402_BASE_RPC_URL (or another network's pair, "
    "docs/networks.md): without one, nothing can be paid"
)


def no_receivers_check() -> Check:
    """The row when no network has a receiving address: the watcher would sell nothing."""
    value = "no network takes payments"
    return Check("settings", "X402_*_PAYMENT_ADDRESS", "fail", value, HOWTO_RECEIVE)


def _public_url(s: Settings) -> str | None:
    value = s.value("watcher_public_url")
    return None if value is None else str(value).strip() or None


def public_url_check(s: Settings) -> Check:
    """WATCHER_PUBLIC_URL: unset in production is a warning (links follow the Host header)."""
    url = _public_url(s)
    if url is None:
        if not s.production:
            value = "unset: links use the request's Host (fine in development)"
            return Check("settings", "WATCHER_PUBLIC_URL", "ok", value)
        fix = (
            "set the https:// address payers reach you at (e.g. https://pay.example.com): "
            "402 offers and invoice links are otherwise built from each request's Host header"
        )
        return Check("settings", "WATCHER_PUBLIC_URL", "warn", "unset", fix)
    if s.production and urlsplit(url).scheme != "https":
        fix = "payers and wallets should reach you over TLS: use an https:// URL"
        return Check("settings", "WATCHER_PUBLIC_URL", "warn", url, fix)
    return Check("settings", "WATCHER_PUBLIC_URL", "ok", url)
