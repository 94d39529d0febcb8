"""Service keys: how a backend that is not HTTP-proxied authenticates to ``POST
/gateway/charge`` (docs/gateway.md, "Charge endpoint for backends").

The operator creates one per backend (``watcher service-key create``); the key is
printed once and only its SHA-256 is stored (as subscriber keys). Each key is
scoped to route labels of the gateway file (``GET /v1/forecast/{city}``) or,
said explicitly, to every route; it is revoked with a reason, never deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watcher import db, errors, gateway_config, keys
from watcher.settings import Settings

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


async def create(pool: db.Pool, name: str, routes: Sequence[str] | None) -> Created:
    """A new key for ``routes`` (None: every route); returns the key in clear, once."""
    key = new_key()
    row = await pool.fetchrow(
        db.q("gateway_service_key_insert"),
        name,
        keys.sha256(key),
        key[:PREFIX_SHOWN],
        routes is None,
        None if routes is None else sorted(set(routes)),
    )
    assert row is not None
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


async def revoke(pool: db.Pool, key_id: int, reason: str) -> bool:
    """Revoke key ``key_id``; False when there is no such live key."""
    return await pool.fetchval(db.q("gateway_service_key_revoke"), key_id, reason) is not None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``watcher service-key create|list|revoke``."""
    p = sub.add_parser(
        "service-key",
        help="keys for backends that charge calls through POST /gateway/charge",
        description="Create (printed once, stored hashed), list or revoke service keys.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="a new key, printed once")
    c.add_argument("--name", required=True, help="who uses it (e.g. the backend's name)")
    scope = c.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--routes", nargs="+", metavar="LABEL", help='route labels, e.g. "GET /v1/forecast/{city}"'
    )
    scope.add_argument("--all-routes", action="store_true", help="every route of the file")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    ls = actions.add_parser("list", help="every key: id, name, prefix, scope, last use")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    r = actions.add_parser("revoke", help="revoke a key (its calls are refused from now)")
    r.add_argument("id", type=int, help="the key's id (from list)")
    r.add_argument("--reason", required=True, help="why (kept with the key)")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``service-key`` action; exit 0, 1 for a revoke of no live key, 2 for bad
    input (an unknown route label)."""
    from watcher import daemon

    if args.action == "create":
        try:
            if not args.name.strip() or len(args.name) > 100:
                raise errors.ConfigError(["--name must be 1 to 100 characters"])
            if args.routes is not None:
                check_routes(args.routes, gateway_config.from_settings(settings))
        except errors.ConfigError as exc:
            print(f"watcher: {exc}", file=sys.stderr)
            return 2

    async def go() -> tuple[int, str]:
        async with daemon.database(settings) as pool:
            if args.action == "create":
                made = await create(pool, args.name, args.routes)
                if args.json:
                    return 0, json.dumps({"id": made.id, "key": made.key})
                return 0, (
                    f"service key {made.id} ({args.name}): {made.key}\n"
                    "shown once: store it now; only its hash is kept"
                )
            if args.action == "list":
                items = await listing(pool)
                if args.json:
                    return 0, json.dumps(items)
                return 0, "\n".join(_line(i) for i in items) or "no service keys"
            if await revoke(pool, args.id, args.reason):
                return 0, f"service key {args.id} revoked"
            return 1, f"no live service key {args.id}"

    code, text = asyncio.run(go())
    print(text)
    return code


def _line(item: dict[str, Any]) -> str:
    scope = "all routes" if item["all_routes"] else ", ".join(item["routes"])
    state = (
        f"revoked {item['revoked_at']} ({item['revoked_reason']})" if item["revoked_at"] else "live"
    )
    used = item["last_used_at"] or "never"
    return (
        f"{item['id']}\t{item['name']}\t{item['key_prefix']}…\t{state}\tlast used {used}\t{scope}"
    )
