"""The event feed for pull consumers (``GET /x402/events``, ``watcher webhooks events``)
and its read-only keys (``watcher event-key``); docs/webhooks.md, "The event feed".

What the feed shows: events in ``(txid, id)`` order, and only those whose writing
transaction is older than every transaction still in flight
(``txid < pg_snapshot_xmin(pg_current_snapshot())``). Outbox ids are taken when a
row is inserted, not when it commits, so a plain ``ORDER BY id`` could hand out id 7
while id 6 is still uncommitted; a consumer that moved its cursor past 7 would never
see 6. Below that horizon every writer has finished, and any transaction that has not
yet written has a larger txid, so nothing can ever appear before a cursor already
handed out: the same events in the same order every time. The price: one long
transaction holds the feed back until it ends (webhooks are not delayed by it).

A read-only key (``erk_…``) is shown once and stored as its SHA-256, like the service
keys; the operator creates it with ``watcher event-key create``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watcher import db, events, keys
from watcher.webhooks import payload

KEY_PREFIX = "erk_"
KEY_PREFIX_SHOWN = 12  # characters kept in clear to tell keys apart in a listing
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class UnknownCursor(LookupError):
    """The ``after`` event does not exist."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[bytes]  # each a wire-format event body
    next: str | None  # the cursor to send as after= next time (None: no event yet)
    has_more: bool  # the page is full: ask again at once


def body(row: Any) -> bytes:
    """The wire format of one ``events`` row: the delivery's own bytes (one builder)."""
    return payload.body(dict(row.items()))


async def page(
    conn: db.Connection, after: int | None, types: Sequence[str] | None, limit: int
) -> Page:
    """One page of the feed after event ``after`` (None: from the start), of ``types``
    (None: all). Raises :class:`UnknownCursor` for an ``after`` that is no event."""
    txid: Any = "0"
    if after is not None:
        txid = await conn.fetchval(db.q("event_feed_cursor"), after)
        if txid is None:
            raise UnknownCursor(events.public_id(after))
    rows = await conn.fetch(
        db.q("event_feed_page"), str(txid), after or 0, list(types) if types else None, limit
    )
    items = [body(r) for r in rows if r["id"] is not None]
    if not rows:  # nothing new below the horizon: the cursor stays
        cursor = after
    elif len(items) == limit:  # maybe more: go on from the last one shown
        cursor = int(rows[-1]["id"])
    else:  # every matching event up to the newest visible one is in this page
        cursor = int(rows[0]["newest"])
    return Page(
        items, events.public_id(cursor) if cursor is not None else None, len(items) == limit
    )


def render(p: Page) -> bytes:
    """The feed's answer: ``{"data": [...], "next": ..., "has_more": ...}``, each item
    the event's body byte for byte."""
    tail = json.dumps({"next": p.next, "has_more": p.has_more}, separators=(",", ":"))
    return b'{"data":[' + b",".join(p.items) + b"]," + tail[1:].encode("ascii")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    id: int
    key: str  # shown once, never stored


async def create_key(conn: db.Connection, name: str) -> CreatedKey:
    """A new read-only feed key; returns it in clear, once (only its hash is kept)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        db.q("event_key_insert"), name, keys.sha256(key), key[:KEY_PREFIX_SHOWN]
    )
    assert row is not None
    return CreatedKey(int(row["id"]), key)


async def list_keys(conn: db.Connection) -> list[dict[str, Any]]:
    """Every read key (never its secret)."""
    out = []
    for r in await conn.fetch(db.q("event_key_list")):
        item = dict(r)
        for k in ("created_at", "last_used_at", "revoked_at"):
            item[k] = item[k].isoformat() if item[k] is not None else None
        out.append(item)
    return out


async def revoke_key(conn: db.Connection, key_id: int) -> bool:
    """Revoke read key ``key_id``; False when there is no such live key."""
    return await conn.fetchval(db.q("event_key_revoke"), key_id) is not None


async def key_allowed(pool: db.Pool, key: str) -> bool:
    """Whether ``key`` is a live read key (its last use stamped)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return False
    return await pool.fetchval(db.q("event_key_use"), keys.sha256(key)) is not None
