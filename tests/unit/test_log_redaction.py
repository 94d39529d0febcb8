"""Logs never carry card data or secrets: the configured output is checked, not the function."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import structlog

from watcher import logs

CARD = "4242 4242 4242 4242"
SECRETS = [
    "sk_live_51Habcdefghijklmnop",
    "whsec_abcdef0123456789",
    "wsk_Zx9-secretsubscriberkey",
    "wcl_claimsecret0123",
    "s3cr3tpass",
    "4242424242424242",
    CARD,
    "tok_abcdef",
]


@contextmanager
def json_logs() -> Iterator[None]:
    # Configured inside the test body: the handler binds the stderr capsys swapped in.
    logs.configure("info", "json")
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_structlog_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    with json_logs():
        log_everything()
    out = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in out
    [line] = lines(out)
    assert line["card"] == {
        "number": "[redacted]",
        "exp_month": "[redacted]",
        "brand": "visa",
        "last4": "4242",
    }
    assert line["note"] == "customer typed [card redacted] in the name field"
    assert line["url"] == "postgresql://[redacted]@127.0.0.1:5432/watcher"
    assert (line["amount"], line["block"]) == (2_500_000, 19_000_000)  # numbers we need stay


def log_everything() -> None:
    structlog.get_logger("test").info(
        "charge attempt",
        card={"number": CARD, "exp_month": 12, "brand": "visa", "last4": "4242"},
        note=f"customer typed {CARD} in the name field",
        stripe_secret_key="sk_live_51Habcdefghijklmnop",
        header="Bearer wsk_Zx9-secretsubscriberkey",
        url="postgresql://watcher:s3cr3tpass@127.0.0.1:5432/watcher",
        payment_token="tok_abcdef",
        detail="claim with wcl_claimsecret0123 and whsec_abcdef0123456789",
        amount=2_500_000,
        block=19_000_000,
    )


def test_stdlib_lines_and_tracebacks_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    with json_logs():
        try:
            raise ValueError("declined card 4000-0000-0000-0002 with key sk_test_abcdef123")
        except ValueError:
            # A plain stdlib logger (uvicorn's own may be set not to propagate by then).
            logging.getLogger("tests.redaction").exception("request failed for 5555555555554444")
    out = capsys.readouterr().err
    for secret in ("4000-0000-0000-0002", "sk_test_abcdef123", "5555555555554444"):
        assert secret not in out
    assert "[card redacted]" in out


def test_non_card_digit_runs_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    with json_logs():
        structlog.get_logger("test").info("tx", tx="1234567890123456", slot="250000000")
    [line] = lines(capsys.readouterr().err)
    assert line["tx"] == "1234567890123456"  # fails the Luhn check: not a card number
