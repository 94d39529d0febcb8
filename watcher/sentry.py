"""Optional error reporting to Sentry when ``SENTRY_DSN`` is set; off otherwise.

Nothing secret and nothing about payers leaves the process: ``before_send``
(and ``before_breadcrumb``) drop request headers, bodies, cookies, query
strings and user data, and rewrite every string in the event: configured
secrets become ``[secret]``, Stripe keys and webhook secrets ``[stripe-key]``,
EVM addresses ``[address]``, hashes ``[hash]``, Solana keys and signatures
``[solana]``, URL credentials and paths ``scheme://host``. Local variables are
never collected. Errors still carry their type, stack and the chain/step context.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.types import Event, Hint

from watcher import __version__
from watcher.settings import Settings

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]+"), "[stripe-key]"),
    (re.compile(r"\bwhsec_[0-9A-Za-z+/=]+"), "[stripe-key]"),
    (re.compile(r"\b([a-z][a-z0-9+.-]*://)[^\s/@]+:[^\s/@]+@"), r"\1[credentials]@"),
    (re.compile(r"\b((?:https?|wss?)://[^\s/?#]+)[/?#][^\s'\"]*"), r"\1"),
    (re.compile(r"\b0x[0-9a-fA-F]{64}\b"), "[hash]"),
    (re.compile(r"\b0x[0-9a-fA-F]{40}\b"), "[address]"),
    (re.compile(r"\b[1-9A-HJ-NP-Za-km-z]{32,88}\b"), "[solana]"),
]
_DROP_REQUEST_KEYS = ("headers", "cookies", "data", "query_string", "env")
# Identifiers Sentry itself needs; they look like base58 or hex but carry no data of ours.
_KEEP_KEYS = frozenset({"event_id", "trace_id", "span_id", "parent_span_id", "release", "sdk"})


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.admin_key(),
        *(
            s.get_secret_value() if s else None
            for s in (
                settings.stripe_secret_key,
                settings.stripe_webhook_secret,
                settings.database_url,
            )
        ),
    ]
    return sorted({v for v in values if v and len(v) >= 6}, key=len, reverse=True)


def scrubber(settings: Settings) -> Callable[[Any], Any]:
    """A function that rewrites every string inside a JSON-like value."""
    exact = _secrets(settings)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in exact:
                value = value.replace(secret, "[secret]")
            for pattern, repl in _PATTERNS:
                value = pattern.sub(repl, value)
            return value
        if isinstance(value, dict):
            return {k: v if k in _KEEP_KEYS else scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [scrub(v) for v in value]
        return value

    return scrub


def before_send(settings: Settings) -> Callable[[Event, Hint], Event | None]:
    """The ``before_send`` hook: strip request and user data, then scrub every string."""
    scrub = scrubber(settings)

    def hook(event: Event, hint: Hint) -> Event | None:
        request = event.get("request")
        if isinstance(request, dict):
            for key in _DROP_REQUEST_KEYS:
                request.pop(key, None)
        event.pop("user", None)
        event.pop("server_name", None)  # hostnames can identify customers' machines
        scrubbed: Event = scrub(event)
        return scrubbed

    return hook


def init(settings: Settings, **options: Any) -> bool:
    """Start reporting when ``SENTRY_DSN`` is set; returns whether it is on.

    ``options`` go to ``sentry_sdk.init`` (tests pass a capturing ``transport``).
    """
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value().strip():
        return False
    send = before_send(settings)
    scrub = scrubber(settings)
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value().strip(),
        release=f"usdc-watcher@{__version__}",
        environment=settings.watcher_env,
        # send_default_pii stays at its default (off); before_send scrubs the rest.
        include_local_variables=False,
        max_request_body_size="never",
        before_send=send,
        before_breadcrumb=lambda crumb, hint: scrub(crumb),
        # Error logs become events: a crashed follower is logged, then the process exits 1.
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        **options,
    )
    return True
