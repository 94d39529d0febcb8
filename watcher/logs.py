"""structlog, configured once: JSON lines when not on a terminal, pretty on a TTY.

Context (``chain``, ``endpoint``, ``block``) is bound per task with
``structlog.contextvars.bind_contextvars``; secrets are ``SecretStr`` and never
reach a log call. Standard-library loggers (uvicorn, asyncpg) go through the
same renderer so one process writes one format.

``redact_secrets`` runs on every line just before rendering (structlog's and
the standard library's alike): values under secret-sounding keys, Stripe and
subscriber keys, bearer tokens, passwords in URLs and card-like numbers
(13-19 digits passing the Luhn check) never reach the output.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


REDACTED = "[redacted]"
_SECRET_KEYS = frozenset(
    {
        "authorization", "password", "passwd", "secret", "api_key", "apikey", "cvc", "cvv",
        "card_number", "number", "exp_month", "exp_year", "stripe_signature", "x_payment_token",
        "claim_secret", "raw_key", "database_url", "dsn",
    }
)  # fmt: skip
_SECRET_SUFFIXES = ("_secret", "_password", "_token", "_key")
_SECRET_TEXT = re.compile(
    r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]+"  # Stripe API keys
    r"|\bwhsec_[0-9A-Za-z]+"  # webhook signing secrets
    r"|\bw(?:sk|cl)_[0-9A-Za-z_\-]+"  # our subscriber keys and claim secrets
    r"|(?i:bearer)\s+[0-9A-Za-z._~+/=\-]+"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in URLs
)
_CARD_LIKE = re.compile(r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[card redacted]" if _luhn(digits) else match.group(0)


def scrub(value: Any) -> Any:
    """A copy of ``value`` with secrets and card-like numbers replaced, recursively."""
    if isinstance(value, str):
        return _CARD_LIKE.sub(_card, _SECRET_TEXT.sub(REDACTED, value))
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(v) for v in value)
    return value


def _secret_key(key: object) -> bool:
    name = str(key).lower().replace("-", "_")
    return name in _SECRET_KEYS or name.endswith(_SECRET_SUFFIXES)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no card data or secrets in any log line (keys and values)."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (the stdlib record)
        event_dict[key] = REDACTED if _secret_key(key) else scrub(value)
    return event_dict


def configure(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    """Set up structlog and stdlib logging for the whole process."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # Not cached: a later configure() (tests, capture_logs) must reach every logger, and
        # we log per step or request, never per transfer, so the saving would not show.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,  # tracebacks as text, then scrubbed
                redact_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # One format per process: loggers that libraries configured for themselves (uvicorn's
    # default config gives its loggers their own handlers) write through the root handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Per-request lines from clients and the embedded server's chatter are not events.
    for noisy in ("uvicorn.access", "pgserver", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
