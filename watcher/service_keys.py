"""Service keys: how a backend that is not HTTP-proxied authenticates to ``POST
/gateway/charge`` (docs/gateway.md, "Charge endpoint for backends").

The operator creates one per backend (``watcher service-key create``); the key is
printed once and only its SHA-256 is stored (as subscriber keys). Each key is
scoped to route labels of the gateway file (``GET /v1/forecast/{city}``) or,
said explicitly, to every route; it is revoked with a reason, never deleted. Creating
and revoking write an ``admin_audit`` row (``service_key.create``, ``service_key.revoke``:
the operator, the client, never the key) in the transaction of the change.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watcher import db, errors, gateway_config, keys, webhook_admin

PREFIX = "wsv_"
PREFIX_SHOWN = 12  # characters kept in clear to tell keys apart in a listing


@dataclass(frozen=True, slots=True)
class Created:
    id: int
    key: str  # shown once, never stored


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def check_routes(routes: Sequence[str], config: gateway_config.GatewayConfig | None) -> None:
    """ConfigError naming the labels the gateway file does not have (when there is one)."""
    if config is None:
        return
    labels = {r.label for r in config.routes}
    unknown = [r for r in routes if r not in labels]
    if unknown:
        raise errors.ConfigError(
            [
                f"no route {label!r} in {config.path} (its routes: {', '.join(sorted(labels))})"
                for label in unknown
            ]
        )


async def create(
    pool: db.Pool, name: str, routes: Sequence[str] | None, *, operator: str, client: str
) -> Created:
    """A new key for ``routes`` (None: every route); returns the key in clear, once.
    Audited as ``operator`` acting from ``client``."""
    key = new_key()
    scope = None if routes is None else sorted(set(routes))
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            db.q("gateway_service_key_insert"),
            name,
            keys.sha256(key),
            key[:PREFIX_SHOWN],
            routes is None,
            scope,
        )
        assert row is not None
        await webhook_admin.audit(
            conn,
            "service_key.create",
            str(row["id"]),
            f"service key {name[:100]!r}",
            {"name": name, "routes": scope, "all_routes": routes is None},
            client,
            operator,
        )
    return Created(int(row["id"]), key)


async def listing(pool: db.Pool) -> list[dict[str, Any]]:
    """Every key (never its secret): id, name, prefix, scope, times, revocation."""
    rows = await pool.fetch(db.q("gateway_service_key_list"))
    out = []
    for r in rows:
        item = dict(r)
        for k in ("created_at", "last_used_at", "revoked_at"):
            item[k] = item[k].isoformat() if item[k] is not None else None
        out.append(item)
    return out


async def revoke(pool: db.Pool, key_id: int, reason: str, *, operator: str, client: str) -> bool:
    """Revoke key ``key_id``; False when there is no such live key (nothing audited)."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(db.q("gateway_service_key_revoke"), key_id, reason) is None:
            return False
        await webhook_admin.audit(
            conn, "service_key.revoke", str(key_id), reason, {}, client, operator
        )
    return True
