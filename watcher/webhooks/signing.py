"""Signing secrets and the Standard Webhooks headers of one delivery attempt.

The signature itself is the ``standardwebhooks`` package's (the reference
implementation receivers verify with), so our bytes and theirs cannot drift apart.
``webhook-id`` is the event's public id on every attempt; ``webhook-timestamp`` is
the attempt's own time, so a retry three days later is not refused as stale.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import standardwebhooks

PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes


def new_secret() -> str:
    """A fresh signing secret in the ``whsec_<base64>`` form (shown to the merchant once)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(secret: str, msg_id: str, at: datetime, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``body`` for ``msg_id`` at time ``at``."""
    hook = standardwebhooks.Webhook(secret)
    # The package reads a naive or UTC datetime (it replaces tzinfo with UTC).
    return hook.sign(msg_id, at.astimezone(UTC), body.decode("utf-8"))


def headers(msg_id: str, body: bytes, keys: Sequence[str], at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers: one signature per secret in ``keys``."""
    if not keys:
        raise ValueError("an attempt needs at least one signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signature(k, msg_id, at, body) for k in keys),
    }
