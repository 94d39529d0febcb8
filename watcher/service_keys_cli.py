"""``watcher service-key create|list|revoke``: the operator's side of service keys
(``watcher/service_keys.py``); the key is printed once. create and revoke take
``--operator NAME`` (default ``WATCHER_OPERATOR``), recorded in ``admin_audit``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from watcher import daemon, errors, gateway_config, operator, service_keys
from watcher.settings import Settings


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
    operator.add_flag(c)
    ls = actions.add_parser("list", help="every key: id, name, prefix, scope, last use")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    r = actions.add_parser("revoke", help="revoke a key (its calls are refused from now)")
    r.add_argument("id", type=int, help="the key's id (from list)")
    r.add_argument("--reason", required=True, help="why (kept with the key)")
    operator.add_flag(r)
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``service-key`` action; exit 0, 1 for a revoke of no live key, 2 for bad
    input (an unknown route label, no operator)."""
    who = operator.from_cli(args.operator) if args.action != "list" else ""  # 2 without
    if args.action == "create":
        try:
            if not args.name.strip() or len(args.name) > 100:
                raise errors.ConfigError(["--name must be 1 to 100 characters"])
            if args.routes is not None:
                service_keys.check_routes(args.routes, gateway_config.from_settings(settings))
        except errors.ConfigError as exc:
            print(f"watcher: {exc}", file=sys.stderr)
            return 2

    async def go() -> tuple[int, str]:
        async with daemon.database(settings) as pool:
            if args.action == "create":
                made = await service_keys.create(
                    pool, args.name, args.routes, operator=who, client=operator.cli_client()
                )
                if args.json:
                    return 0, json.dumps({"id": made.id, "key": made.key})
                return 0, (
                    f"service key {made.id} ({args.name}): {made.key}\n"
                    "shown once: store it now; only its hash is kept"
                )
            if args.action == "list":
                items = await service_keys.listing(pool)
                if args.json:
                    return 0, json.dumps(items)
                return 0, "\n".join(_line(i) for i in items) or "no service keys"
            done = await service_keys.revoke(
                pool, args.id, args.reason, operator=who, client=operator.cli_client()
            )
            if done:
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
