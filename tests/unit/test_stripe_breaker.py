"""The Stripe breaker's gauge says what the breaker does now, with or without calls."""

from __future__ import annotations

import time
import weakref

import pytest
from prometheus_client import REGISTRY

from api import stripe_client


def _open_gauge() -> float | None:
    return REGISTRY.get_sample_value("watcher_stripe_circuit_open")


def test_the_gauge_falls_back_to_0_when_the_cooldown_ends_without_a_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only this test's breaker: another test's client may still be alive, and open.
    monkeypatch.setattr(stripe_client, "_BREAKERS", weakref.WeakSet())
    # A cooldown long enough that a loaded machine reads the gauge before it ends.
    breaker = stripe_client.CircuitBreaker(threshold=2, cooldown=1.0)
    breaker.failure()
    assert not breaker.is_open() and _open_gauge() == 0
    breaker.failure()
    assert breaker.is_open() and _open_gauge() == 1
    time.sleep(1.05)  # nobody calls Stripe meanwhile: nothing is refused any more
    assert not breaker.is_open() and _open_gauge() == 0
    breaker.check()  # the trial is let through
    breaker.failure()  # and fails: open again at once
    assert breaker.is_open() and _open_gauge() == 1
    breaker.success()
    assert _open_gauge() == 0
