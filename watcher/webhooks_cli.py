"""``watcher webhooks …`` and ``watcher event-key …``: the operator's side of webhook
endpoints, events, redelivery, replay (``watcher/webhook_admin.py``) and the feed's
read-only keys (``watcher/event_feed.py``). Secrets and keys are printed once.

Every command that changes something takes ``--operator NAME`` (default
``WATCHER_OPERATOR``), recorded in ``admin_audit`` as the admin API records its header.

Exit codes: 0 done, 1 nothing to act on (no such endpoint, event or live key; a
disabled endpoint), 2 bad input (the message names it; no operator is bad input).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from watcher import daemon, db, event_feed, events, operator, webhook_admin
from watcher.settings import Settings

Handler = Callable[[argparse.Namespace, Settings, db.Pool], Awaitable[tuple[int, Any]]]
# the actions that change something: each takes --operator and writes an audit row
CHANGES = ("create", "update", "delete", "rotate-secret", "redeliver", "replay")
KEY_CHANGES = ("create", "revoke")


def _who() -> str:
    return operator.cli_client()


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``watcher webhooks …`` and ``watcher event-key …``."""
    _add_webhooks(sub)
    p = sub.add_parser(
        "event-key",
        help="read-only keys for the event feed (GET /x402/events)",
        description="Create (printed once, stored hashed), list or revoke feed keys.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="a new key, printed once")
    c.add_argument("--name", required=True, help="who reads with it (e.g. the order system)")
    actions.add_parser("list", help="every key: id, name, prefix, last use, revocation")
    r = actions.add_parser("revoke", help="revoke a key (the feed refuses it from now)")
    r.add_argument("id", type=int, help="the key's id (from list)")
    for name, a in actions.choices.items():
        a.add_argument("--json", action="store_true", help="machine-readable output")
        if name in KEY_CHANGES:
            operator.add_flag(a)
    p.set_defaults(func=run_event_key)


def _add_webhooks(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "webhooks",
        help="webhook endpoints, events, redelivery and replay",
        description="Manage where events are sent (docs/webhooks.md).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="a new endpoint; its signing secret printed once")
    c.add_argument("--url", required=True)
    c.add_argument("--events", nargs="+", required=True, metavar="TYPE", help='types, or "*"')
    c.add_argument("--description")
    actions.add_parser("list", help="every endpoint (never a secret)")
    u = actions.add_parser("update", help="change url, events, enabled, description")
    u.add_argument("id")
    u.add_argument("--url")
    u.add_argument("--events", nargs="+", metavar="TYPE")
    on = u.add_mutually_exclusive_group()
    on.add_argument("--enable", dest="enabled", action="store_const", const=True)
    on.add_argument("--disable", dest="enabled", action="store_const", const=False)
    text = u.add_mutually_exclusive_group()
    text.add_argument("--description")
    text.add_argument("--clear-description", action="store_true")
    d = actions.add_parser("delete", help="delete an endpoint; its pending deliveries cancelled")
    d.add_argument("id")
    r = actions.add_parser("rotate-secret", help="a new secret; the old one signs for a grace")
    r.add_argument("id")
    r.add_argument("--grace-hours", type=float, default=24.0, metavar="H")
    e = actions.add_parser("events", help="the event feed, oldest first")
    e.add_argument("--after", metavar="EVT_ID")
    e.add_argument("--type", dest="types", nargs="+", metavar="TYPE")
    e.add_argument("--limit", type=int, default=event_feed.DEFAULT_LIMIT)
    dl = actions.add_parser("deliveries", help="an event, its deliveries and their attempts")
    dl.add_argument("event", metavar="EVT_ID")
    rd = actions.add_parser("redeliver", help="send an event to an endpoint again, now")
    rd.add_argument("event", metavar="EVT_ID")
    rd.add_argument("--endpoint", required=True, metavar="ID")
    rp = actions.add_parser("replay", help="queue every matching event since a time")
    rp.add_argument("id")
    rp.add_argument("--since", required=True, help="ISO-8601 time with a zone")
    rp.add_argument("--until", help="ISO-8601 time with a zone (default: now)")
    rp.add_argument("--events", nargs="+", metavar="TYPE", help="default: the endpoint's")
    for name, a in actions.choices.items():
        a.add_argument("--json", action="store_true", help="machine-readable output")
        if name in CHANGES:
            operator.add_flag(a)
    p.set_defaults(func=run_webhooks)


def _when(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise webhook_admin.Invalid(
            "invalid_time",
            f"{flag} {text!r} is not an ISO-8601 time with a zone",
            f"e.g. {flag} 2026-12-01T09:00:00Z",
        )
    return value


def _event(text: str) -> int:
    n = events.parse_public_id(text)
    if n is None:
        raise webhook_admin.Invalid(
            "invalid_event", f"{text!r} is not an event id", "give evt_<n> (from events)"
        )
    return n


def _missing(what: str) -> tuple[int, str]:
    return 1, f"watcher: no {what}"


async def _create(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    made = await webhook_admin.create(pool, s, a.url, a.events, a.description, _who(), a.operator)
    text = (
        f"endpoint {made['id']} -> {made['url']} ({', '.join(made['events'])})\n"
        f"signing secret: {made['secret']}\nshown once: give it to the receiver now"
    )
    return 0, made if a.json else text


async def _list(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    items = await webhook_admin.listing(pool)
    if a.json:
        return 0, items
    return 0, "\n".join(_line(i) for i in items) or "no webhook endpoints"


async def _update(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    changes: dict[str, Any] = {
        k: v
        for k, v in (("url", a.url), ("events", a.events), ("enabled", a.enabled))
        if v is not None
    }
    if a.description is not None or a.clear_description:
        changes["description"] = a.description
    if not changes:
        raise webhook_admin.Invalid(
            "nothing_to_change",
            "nothing to change",
            "give --url, --events, --enable/--disable or --description",
        )
    got = await webhook_admin.update(pool, s, a.id, changes, _who(), a.operator)
    if got is None:
        return _missing(f"webhook endpoint {a.id}")
    return 0, got if a.json else _line(got)


async def _delete(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    n = await webhook_admin.delete(pool, a.id, _who(), a.operator)
    if n is None:
        return _missing(f"webhook endpoint {a.id}")
    out = {"id": a.id, "deleted": True, "deliveries_cancelled": n}
    return 0, out if a.json else f"endpoint {a.id} deleted; {n} pending deliveries cancelled"


async def _rotate(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    got = await webhook_admin.rotate(pool, a.id, a.grace_hours, _who(), a.operator)
    if got is None:
        return _missing(f"webhook endpoint {a.id}")
    until = got["previous_secret_until"] or "now (no grace)"
    text = f"new signing secret: {got['secret']}\nthe old one signs too until {until}"
    return 0, got if a.json else text


async def _events(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    after = _event(a.after) if a.after is not None else None
    if not 1 <= a.limit <= event_feed.MAX_LIMIT:
        raise webhook_admin.Invalid(
            "invalid_limit", f"--limit {a.limit}", f"give 1 to {event_feed.MAX_LIMIT}"
        )
    if a.types:
        webhook_admin.check_types(a.types)
    async with pool.acquire() as conn:
        try:
            got = await event_feed.page(conn, after, a.types, a.limit)
        except event_feed.UnknownCursor:
            return _missing(f"event {a.after}")
    if a.json:
        return 0, json.loads(event_feed.render(got))
    lines = [
        f"{e['id']}\t{e['timestamp']}\t{e['type']}\t{e['data'].get('id', '')}"
        for e in (json.loads(i) for i in got.items)
    ]
    return 0, "\n".join([*lines, f"next: {got.next or '-'}"])


async def _deliveries(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    got = await webhook_admin.event_detail(pool, _event(a.event))
    if got is None:
        return _missing(f"event {a.event}")
    if a.json:
        return 0, got
    lines = [f"{got['event']['id']}\t{got['event']['type']}\t{got['event']['timestamp']}"]
    for d in got["deliveries"]:
        lines.append(f"  {d['endpoint_id']}\t{d['status']}\tattempts {d['attempts']}\t{d['url']}")
        lines += [
            f"    #{t['attempt']}\t{t['started_at']}\t{t['status_code'] or t['error']}"
            for t in d["attempts_made"]
        ]
    return 0, "\n".join(lines)


async def _redeliver(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    got = await webhook_admin.redeliver(pool, _event(a.event), a.endpoint, _who(), a.operator)
    return 0, got if a.json else f"{got['event_id']} to {a.endpoint}: pending, due now"


async def _replay(a: argparse.Namespace, s: Settings, pool: db.Pool) -> tuple[int, Any]:
    since = _when(a.since, "--since")
    assert since is not None
    until = _when(a.until, "--until")
    got = await webhook_admin.replay(pool, a.id, since, until, a.events, _who(), a.operator)
    if got is None:
        return _missing(f"webhook endpoint {a.id}")
    text = f"{got['matched']} events: {got['created']} new deliveries, {got['reset']} sent again"
    return 0, got if a.json else text


HANDLERS: dict[str, Handler] = {
    "create": _create,
    "list": _list,
    "update": _update,
    "delete": _delete,
    "rotate-secret": _rotate,
    "events": _events,
    "deliveries": _deliveries,
    "redeliver": _redeliver,
    "replay": _replay,
}


def _line(item: dict[str, Any]) -> str:
    state = "enabled" if item["enabled"] else f"disabled {item['disabled_reason'] or ''}".strip()
    return f"{item['id']}\t{state}\t{item['url']}\t{','.join(item['events'])}"


def _print(code: int, out: Any, as_json: bool) -> int:
    text = json.dumps(out) if as_json and code == 0 else str(out)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def run_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``webhooks`` action (exit codes in the module docstring)."""
    if args.action in CHANGES:
        args.operator = operator.from_cli(args.operator)  # ConfigError: exit 2, no connection

    async def go() -> tuple[int, Any]:
        async with daemon.database(settings) as pool:
            return await HANDLERS[args.action](args, settings, pool)

    try:
        if args.action in ("create", "update") and getattr(args, "events", None):
            webhook_admin.check_types(args.events)  # before any connection
        code, out = asyncio.run(go())
    except webhook_admin.NotFound as exc:
        code, out = 1, f"watcher: {exc.message}"
    except webhook_admin.Conflict as exc:
        code, out = 1, f"watcher: {exc.message}; {exc.fix}"
    except webhook_admin.Invalid as exc:
        code, out = 2, f"watcher: {exc.message}; {exc.fix}"
    return _print(code, out, args.json)


def run_event_key(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``event-key`` action: 0 done, 1 a revoke of no live key, 2 a bad name or
    no operator."""
    if args.action in KEY_CHANGES:
        args.operator = operator.from_cli(args.operator)  # ConfigError: exit 2
    if args.action == "create" and not (args.name.strip() and len(args.name) <= 100):
        return _print(2, "watcher: --name must be 1 to 100 characters", False)

    async def go() -> tuple[int, Any]:
        async with daemon.database(settings) as pool, pool.acquire() as conn:
            if args.action == "create":
                async with conn.transaction():
                    made = await event_feed.create_key(conn, args.name)
                    await webhook_admin.audit(
                        conn,
                        "event_key.create",
                        str(made.id),
                        f"feed key {args.name!r}",
                        {"name": args.name},
                        _who(),
                        args.operator,
                    )
                out = {"id": made.id, "key": made.key}
                text = f"feed key {made.id} ({args.name}): {made.key}\nshown once: store it now"
                return 0, out if args.json else text
            if args.action == "list":
                items = await event_feed.list_keys(conn)
                text = "\n".join(
                    f"{k['id']}\t{k['name']}\t{k['key_prefix']}…\t"
                    f"{'revoked ' + k['revoked_at'] if k['revoked_at'] else 'live'}\t"
                    f"last used {k['last_used_at'] or 'never'}"
                    for k in items
                )
                return 0, items if args.json else (text or "no feed keys")
            async with conn.transaction():
                if not await event_feed.revoke_key(conn, args.id):
                    return 1, f"watcher: no live feed key {args.id}"
                await webhook_admin.audit(
                    conn,
                    "event_key.revoke",
                    str(args.id),
                    "feed key revoked",
                    {},
                    _who(),
                    args.operator,
                )
            return 0, {
                "id": args.id,
                "revoked": True,
            } if args.json else f"feed key {args.id} revoked"

    code, out = asyncio.run(go())
    return _print(code, out, args.json)
