"""The wire format of one event: what a webhook delivery carries and a feed item is.

``{"id": "evt_<n>", "type": ..., "timestamp": "<created_at, UTC, Z>", "sequence": <n>,
"data": {...}}``, compact JSON in UTF-8. One builder, so a receiver that reads both
the webhooks and the feed sees byte-for-byte the same object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from watcher import events


def timestamp(at: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` (microseconds kept: events often share a second)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event as a JSON object, from an ``events`` row (id, type, created_at, data)."""
    data = row["data"]
    if isinstance(data, str | bytes):  # asyncpg hands jsonb over as text unless told otherwise
        data = json.loads(data)
    return {
        "id": events.public_id(int(row["id"])),
        "type": row["type"],
        "timestamp": timestamp(row["created_at"]),
        "sequence": int(row["id"]),
        "data": data,
    }


def body(row: Mapping[str, Any]) -> bytes:
    """The bytes sent (and signed) for one ``events`` row."""
    return json.dumps(document(row), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
