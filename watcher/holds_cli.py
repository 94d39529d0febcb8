"""``watcher holds …``: the review of held payments from a shell (issue 16).

Works on the database directly, through the same functions as the admin API
(watcher/holds.py -> ``ledger.release`` / ``ledger.reject``): each change names its
operator (``--operator`` or ``WATCHER_OPERATOR``) and writes its audit row and events
in one transaction.

Exit codes: 0 done, 1 nothing to act on (no such payment, or it is not held),
2 bad input (the message names it).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from watcher import daemon, holds, money, operator
from watcher.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``watcher holds list | show ID | release ID | reject ID``."""
    p = sub.add_parser(
        "holds",
        help="payments held for review: list, show, release, reject",
        description="The review queue of payments a screening rule held at credit "
        "(docs/holds-and-refunds.md). Release credits a payment; reject makes it refundable.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="held payments, oldest first, with their score")
    s = actions.add_parser("show", help="one payment: its reason, rules and review")
    s.add_argument("id", type=int, help="the payment's id (from list)")
    for name, what in (("release", "credit it"), ("reject", "never claimable, refundable")):
        a = actions.add_parser(name, help=f"{name} a held payment ({what})")
        a.add_argument("id", type=int, help="the payment's id (from list)")
        a.add_argument("--reason", required=True, help="why (1 to 500 characters; recorded)")
        a.add_argument("--operator", help=f"who you are (default: ${operator.ENV})")
    for a in actions.choices.values():
        a.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _client() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (OSError, KeyError):  # no login name in some containers
        return "cli"


def _line(p: dict[str, Any]) -> str:
    score = (p["risk"] or {}).get("score", "-")
    return (
        f"{p['id']}\t{p['chain']}\t{p['tx_hash']}\t{money.usd(int(p['amount']))} USDC\t"
        f"score {score}\theld {p['held_at']}\t{p['reason']}"
    )


def _detail(p: dict[str, Any]) -> str:
    lines = [
        _line(p),
        f"state: {p['state']}  from: {p['from_address']}  "
        f"tx sender: {p['tx_sender'] or 'not looked up (no rule needed it)'}",
    ]
    for r in (p["risk"] or {}).get("rules", []):
        lines.append(f"  rule {r['rule']} (weight {r['weight']}): {r['why']}")
    if p["reviewed_by"] is not None:
        lines.append(f"reviewed by {p['reviewed_by']} at {p['reviewed_at']}: {p['review_note']}")
    return "\n".join(lines)


def _print(code: int, out: Any, as_json: bool) -> int:
    text = json.dumps(out, default=str) if as_json and code == 0 else str(out)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``holds`` action (exit codes in the module docstring)."""
    who = None
    if args.action in ("release", "reject"):
        who = operator.from_cli(args.operator)  # ConfigError (exit 2) before any connection
        if not 1 <= len(args.reason.strip()) <= holds.NOTE_MAX:
            return _print(2, f"watcher: --reason must be 1 to {holds.NOTE_MAX} characters", False)

    async def go() -> tuple[int, Any]:
        async with daemon.database(settings) as pool, pool.acquire() as conn:
            if args.action == "list":
                held = await holds.queue(conn)
                text = "\n".join(_line(p) for p in held)
                return 0, held if args.json else (text or "no payment is held")
            if args.action == "show":
                p = await holds.payment(conn, args.id)
                if p is None:
                    return 1, f"watcher: no payment {args.id}"
                return 0, p if args.json else _detail(p)
            assert who is not None
            async with conn.transaction():
                out = await holds.review(
                    conn, args.action, args.id, who, args.reason.strip(), client=_client()
                )
            if out.payment is None:
                return 1, f"watcher: no payment {args.id}"
            if not out.moved:
                return 1, f"watcher: payment {args.id} is {out.payment['state']}, not held"
            return 0, out.payment if args.json else _detail(out.payment)

    code, out = asyncio.run(go())
    return _print(code, out, args.json)
