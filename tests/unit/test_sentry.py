"""Sentry reporting: off without SENTRY_DSN; with it, events carry no secrets or payer data.

The SDK runs for real; only its transport is replaced (it would send over the network).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from watcher import sentry
from watcher.settings import Settings

ADMIN_KEY = "Jx1f0CwV7Rk2sQm9Tz4bYp8LhN3aG6dE5uKiOcWqXyZ"
STRIPE_KEY = "sk_live_51HabcdefghijklmnopqrstuvwxyzABCD"
WEBHOOK = "whsec_QWERTYUIOPasdfghjkl1234567890"
DB_URL = "postgresql://watcher:hunter2hunter2@db.internal:5432/ledger"
PAYER = "0x52908400098527886E0F7030069857D2E4169EE7"
TX = "0x" + "ab" * 32
SOL_PAYER = "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M"
RPC = "https://base-mainnet.g.provider.example/v2/SECRETRPCKEY123"


class Capture(Transport):
    """Keeps envelopes in memory instead of sending them."""

    envelopes: ClassVar[list[Envelope]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        Capture.envelopes.append(envelope)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    Capture.envelopes = []
    settings = Settings(
        _env_file=None,
        sentry_dsn="https://public@127.0.0.1/1",
        x402_admin_key=ADMIN_KEY,
        stripe_secret_key=STRIPE_KEY,
        stripe_webhook_secret=WEBHOOK,
        database_url=DB_URL,
    )
    assert sentry.init(settings, transport=Capture)
    out: list[dict[str, Any]] = []
    yield out
    sentry_sdk.flush(timeout=2)
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.init()  # back to a disabled client


def _events() -> list[dict[str, Any]]:
    sentry_sdk.flush(timeout=2)
    found = []
    for env in Capture.envelopes:
        for item in env.items:
            if item.type == "event" and item.payload.json is not None:
                found.append(item.payload.json)
    return found


def test_off_without_dsn() -> None:
    assert sentry.init(Settings(_env_file=None)) is False
    assert sentry.init(Settings(_env_file=None, sentry_dsn="  ")) is False


def test_exception_events_carry_no_secrets_or_payer_data(events: list[dict[str, Any]]) -> None:
    try:
        raise RuntimeError(
            f"credit failed for {PAYER} tx {TX} sol {SOL_PAYER} via {RPC} "
            f"key {STRIPE_KEY} hook {WEBHOOK} admin {ADMIN_KEY} db {DB_URL} "
            "other sk_test_51HsomeoneElse9 whsec_notOurs123 postgres://u:pw1234@h/db"
        )
    except RuntimeError as exc:
        with sentry_sdk.new_scope() as scope:
            scope.set_user({"id": PAYER, "ip_address": "203.0.113.7"})
            scope.set_extra("payer", PAYER)
            sentry_sdk.add_breadcrumb(message=f"fetched {TX} from {RPC}")
            sentry_sdk.capture_exception(exc)
    captured = _events()
    assert len(captured) == 1
    text = repr(captured[0])
    for leaked in (
        PAYER,
        PAYER.lower(),
        TX,
        SOL_PAYER,
        "SECRETRPCKEY123",
        STRIPE_KEY,
        WEBHOOK,
        ADMIN_KEY,
        "hunter2hunter2",
        "203.0.113.7",
    ):
        assert leaked not in text, leaked
    message = captured[0]["exception"]["values"][0]["value"]
    assert message == (
        "credit failed for [address] tx [hash] sol [solana] via "
        "https://base-mainnet.g.provider.example key [secret] hook [secret] "
        "admin [secret] db [secret] other [stripe-key] [stripe-key] postgres://[credentials]@h/db"
    )
    assert captured[0]["exception"]["values"][0]["type"] == "RuntimeError"
    assert "user" not in captured[0]
    assert len(captured[0]["event_id"]) == 32  # Sentry's own ids are left alone


def test_error_logs_become_scrubbed_events(events: list[dict[str, Any]]) -> None:
    logging.getLogger("watcher.daemon").error("task_crashed paying %s", PAYER)
    captured = _events()
    assert len(captured) == 1
    assert PAYER not in repr(captured[0])
    assert "[address]" in repr(captured[0])
