"""Managing webhook endpoints, redelivery and replay: what the admin API
(``api/routes/webhooks_admin.py``) and ``watcher webhooks`` share (docs/webhooks.md,
"Managing endpoints", "Redelivery and replay").

Every change writes an ``admin_audit`` row (who asked: the operator's name and the
client; what changed, never a secret) in the transaction of the change. An endpoint's
secret leaves this module only in the answers of :func:`create` and :func:`rotate`. Bad
input raises :class:`Invalid` (the API answers 422, the CLI exits 2); a missing endpoint
or event returns None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from watcher import db, event_feed, events
from watcher.settings import Settings
from watcher.webhooks import netguard, signing

REPLAY_CAP = 10_000  # events one replay may queue; a wider one is refused (use until=)
MAX_GRACE_HOURS = 168  # a rotation's old secret signs for at most a week
MAX_TYPES = 50


class Invalid(ValueError):
    """Bad input: ``message`` says what, ``fix`` what to do; ``code`` for the API."""

    def __init__(self, code: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.code, self.message, self.fix = code, message, fix


class Conflict(Invalid):
    """The input is fine but the endpoint's state refuses it (the API answers 409)."""


class NotFound(Invalid):
    """What the input names does not exist (the API answers 404)."""


def check_url(url: str, settings: Settings) -> str:
    """The URL as it will be called (netguard's judgement under the settings' policy),
    or :class:`Invalid` saying why not."""
    try:
        return netguard.check_url(url, netguard.policy(settings))
    except netguard.Refused as exc:
        raise Invalid(
            "invalid_url",
            f"{url[:100]!r} is refused: {exc.reason}",
            "give your receiver's public https URL, e.g. https://example.com/hooks/usdc "
            "(a private network must be listed in WATCHER_WEBHOOK_ALLOW_NETWORKS)",
        ) from exc


def check_types(types: Sequence[str]) -> list[str]:
    """The event types, deduplicated and sorted, or :class:`Invalid` naming the valid ones."""
    wanted = sorted(set(types))
    unknown = [t for t in wanted if t != "*" and t not in events.TYPES]
    if not wanted or len(wanted) > MAX_TYPES or unknown:
        problem = f"unknown event types: {', '.join(unknown)}" if unknown else "no event types"
        raise Invalid(
            "unknown_event_type",
            problem,
            f'use "*" (every type) or some of: {", ".join(events.TYPES)}',
        )
    return ["*"] if "*" in wanted else wanted


def shown(row: Any) -> dict[str, Any]:
    """An endpoint as the API and CLI show it (never a secret)."""
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    out["events"] = list(out.pop("event_types"))
    return out


async def audit(
    conn: db.Connection,
    action: str,
    subject: str,
    reason: str,
    detail: Mapping[str, Any],
    client: str,
    operator: str,
) -> None:
    """One ``admin_audit`` row, in the caller's transaction (``detail`` never a secret):
    ``operator`` is who acted (watcher/operator.py), ``client`` where from."""
    await conn.execute(
        db.q("webhook_admin_audit"),
        action,
        subject,
        reason[:500],
        json.dumps(detail),
        client,
        operator,
    )


async def create(
    pool: db.Pool,
    settings: Settings,
    url: str,
    types: Sequence[str],
    description: str | None,
    client: str,
    operator: str,
) -> dict[str, Any]:
    """A new endpoint; the answer holds its ``secret``, the only time it is shown."""
    url = check_url(url, settings)
    wanted = check_types(types)
    secret = signing.new_secret()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            db.q("webhook_admin_create"), url, description, wanted, secret, client
        )
        assert row is not None
        await audit(
            conn,
            "webhook.create",
            row["id"],
            f"endpoint for {url[:300]}",
            {"url": url, "events": wanted, "description": description},
            client,
            operator,
        )
    return {**shown(row), "secret": secret}


async def listing(pool: db.Pool) -> list[dict[str, Any]]:
    """Every endpoint not deleted."""
    return [shown(r) for r in await pool.fetch(db.q("webhook_admin_list"))]


async def get(pool: db.Pool, endpoint_id: str) -> dict[str, Any] | None:
    """One endpoint not deleted, or None."""
    row = await pool.fetchrow(db.q("webhook_admin_get"), endpoint_id)
    return None if row is None else shown(row)


async def update(
    pool: db.Pool,
    settings: Settings,
    endpoint_id: str,
    changes: Mapping[str, Any],
    client: str,
    operator: str,
) -> dict[str, Any] | None:
    """Change ``url``, ``events``, ``enabled``, ``description`` (the keys given; a
    ``description`` of None clears it). None when there is no such endpoint."""
    url = check_url(changes["url"], settings) if changes.get("url") is not None else None
    wanted = check_types(changes["events"]) if changes.get("events") is not None else None
    enabled = changes.get("enabled")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            db.q("webhook_admin_update"),
            endpoint_id,
            url,
            "description" in changes,
            wanted,
            enabled,
            changes.get("description"),
        )
        if row is None:
            return None
        detail = {k: v for k, v in changes.items() if k != "events"}
        if wanted is not None:
            detail["events"] = wanted
        await audit(
            conn,
            "webhook.update",
            endpoint_id,
            "changed " + ", ".join(sorted(detail)),
            detail,
            client,
            operator,
        )
    return shown(row)


async def delete(pool: db.Pool, endpoint_id: str, client: str, operator: str) -> int | None:
    """Soft-delete an endpoint and cancel its pending deliveries; returns how many were
    cancelled, None when there is no such endpoint."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(db.q("webhook_admin_delete"), endpoint_id)
        assert row is not None
        if not row["deleted"]:
            return None
        cancelled = int(row["cancelled"])
        await audit(
            conn,
            "webhook.delete",
            endpoint_id,
            f"deleted; {cancelled} pending deliveries cancelled",
            {"cancelled": cancelled},
            client,
            operator,
        )
    return cancelled


async def rotate(
    pool: db.Pool, endpoint_id: str, grace_hours: float, client: str, operator: str
) -> dict[str, Any] | None:
    """A new secret (in the answer, once); the old one signs too until the grace ends."""
    if not 0 <= grace_hours <= MAX_GRACE_HOURS:
        raise Invalid(
            "invalid_grace",
            f"grace_hours {grace_hours} is outside 0 to {MAX_GRACE_HOURS}",
            "give the hours your receivers need to switch secrets (default 24)",
        )
    secret = signing.new_secret()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            db.q("webhook_admin_rotate"), endpoint_id, secret, timedelta(hours=grace_hours)
        )
        if row is None:
            return None
        until = row["previous_secret_until"]
        await audit(
            conn,
            "webhook.rotate_secret",
            endpoint_id,
            f"secret rotated, grace {grace_hours} h",
            {"grace_hours": grace_hours},
            client,
            operator,
        )
    return {
        "id": endpoint_id,
        "secret": secret,
        "previous_secret_until": until.isoformat() if until is not None else None,
    }


def _plain(row: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


async def event_detail(pool: db.Pool, event_id: int) -> dict[str, Any] | None:
    """An event (its wire body as ``event``), its deliveries and each one's attempts."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(db.q("webhook_admin_event"), event_id)
        if row is None:
            return None
        deliveries = [
            _plain(d) for d in await conn.fetch(db.q("webhook_admin_event_deliveries"), event_id)
        ]
        attempts = await conn.fetch(
            db.q("webhook_admin_delivery_attempts"), [d["id"] for d in deliveries]
        )
    for d in deliveries:
        d["attempts_made"] = [
            _plain({k: v for k, v in a.items() if k != "delivery_id"})
            for a in attempts
            if a["delivery_id"] == d["id"]
        ]
    return {"event": json.loads(event_feed.body(row)), "deliveries": deliveries}


async def _live_endpoint(conn: db.Connection, endpoint_id: str) -> Any:
    row = await conn.fetchrow(db.q("webhook_admin_get"), endpoint_id)
    if row is not None and not row["enabled"]:
        raise Conflict(
            "endpoint_disabled",
            f"endpoint {endpoint_id} is disabled: nothing would be sent",
            f'enable it first (PATCH with {{"enabled": true}} or '
            f"watcher webhooks update {endpoint_id} --enable)",
        )
    return row


async def redeliver(
    pool: db.Pool, event_id: int, endpoint_id: str, client: str, operator: str
) -> dict[str, Any]:
    """Make the (event, endpoint) delivery pending and due now, creating it if the
    endpoint never had one; :class:`NotFound` names the event or endpoint missing."""
    async with pool.acquire() as conn, conn.transaction():
        evt = events.public_id(event_id)
        if await conn.fetchrow(db.q("webhook_admin_event"), event_id) is None:
            raise NotFound("unknown_event", f"no event {evt}", "list the events first")
        if await _live_endpoint(conn, endpoint_id) is None:
            raise NotFound(
                "unknown_webhook", f"no webhook endpoint {endpoint_id}", "list the endpoints first"
            )
        row = await conn.fetchrow(db.q("webhook_admin_redeliver"), event_id, endpoint_id)
        assert row is not None
        await audit(
            conn,
            "event.redeliver",
            evt,
            f"redeliver {evt} to {endpoint_id}",
            {"endpoint_id": endpoint_id, "delivery_id": row["id"]},
            client,
            operator,
        )
    return {
        "event_id": evt,
        "endpoint_id": endpoint_id,
        "delivery_id": row["id"],
        "status": row["status"],
        "created": row["created"],
    }


async def replay(
    pool: db.Pool,
    endpoint_id: str,
    since: datetime,
    until: datetime | None,
    types: Sequence[str] | None,
    client: str,
    operator: str,
) -> dict[str, Any] | None:
    """Queue to one endpoint every event written since ``since`` (before ``until``) of
    ``types`` (default: the endpoint's own), at most :data:`REPLAY_CAP` of them.
    None when there is no such endpoint."""
    if until is not None and until <= since:
        raise Invalid("invalid_window", "until must be later than since", "swap or widen them")
    async with pool.acquire() as conn, conn.transaction():
        endpoint = await _live_endpoint(conn, endpoint_id)
        if endpoint is None:
            return None
        wanted = check_types(types) if types is not None else list(endpoint["event_types"])
        n = int(
            await conn.fetchval(
                db.q("webhook_admin_replay_count"), since, until, wanted, REPLAY_CAP + 1
            )
        )
        if n > REPLAY_CAP:
            raise Invalid(
                "replay_too_large",
                f"more than {REPLAY_CAP} events match (the cap of one replay)",
                "replay in windows: give until (and since) so each holds fewer events",
            )
        row = await conn.fetchrow(
            db.q("webhook_admin_replay"), since, until, wanted, REPLAY_CAP, endpoint_id
        )
        assert row is not None
        out = {
            "endpoint_id": endpoint_id,
            "matched": int(row["matched"]),
            "created": int(row["created"]),
            "reset": int(row["reset"]),
            "cap": REPLAY_CAP,
        }
        window = {"since": since.isoformat(), "until": until.isoformat() if until else None}
        await audit(
            conn,
            "webhook.replay",
            endpoint_id,
            f"replay of {out['matched']} events",
            {**window, "events": wanted, **out},
            client,
            operator,
        )
    return out
