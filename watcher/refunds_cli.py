"""``watcher refunds candidates|list|create|export|send``: the operator's side of refunds
(watcher/refunds/, docs/holds-and-refunds.md "Refunds")."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from watcher import daemon, errors, operator, rpc
from watcher.refunds import candidates, model, proof, requests, senders, store, worker
from watcher.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``watcher refunds ...``."""
    p = sub.add_parser(
        "refunds",
        help="refund payments: candidates, list, create, export, send",
        description="Give money back for a payment, exactly once (docs/holds-and-refunds.md).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = actions.add_parser("candidates", help="payments that may need a refund, with why")
    c.add_argument("--limit", type=int, default=100)
    ls = actions.add_parser("list", help="refunds, newest first")
    ls.add_argument("--status", choices=model.STATUSES)
    ls.add_argument("--chain")
    ls.add_argument("--limit", type=int, default=100)
    mk = actions.add_parser("create", help="refund a payment (audited; idempotent by --refund-key)")
    mk.add_argument("payment_id", type=int)
    mk.add_argument("--kind", choices=model.KINDS, default="whole")
    mk.add_argument("--reason", required=True)
    mk.add_argument("--refund-key", help="your idempotency key (a repeat returns the refund)")
    mk.add_argument("--destination", help="another address the payer proves")
    mk.add_argument(
        "--signature",
        help="the sender's signature of the refund message (EVM personal_sign, Solana signMessage)",
    )
    mk.add_argument("--claim-secret", help="the invoice's claim secret")
    mk.add_argument("--amount", type=int, help="base units (required with --signature)")
    ex = actions.add_parser("export", help="a refund as an unsigned transaction to sign")
    ex.add_argument("id", type=int)
    ex.add_argument(
        "--format", help="eip1559 or safe (EVM), solana (Solana); default: the network's first"
    )
    send = actions.add_parser("send", help="one pass of the sender (what the daemon runs)")
    for a in (c, ls, mk, ex, send):
        a.add_argument("--json", action="store_true", help="machine-readable output")
    for a in (mk, ex, send):
        a.add_argument("--operator", help=f"who acts (default ${operator.ENV})")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """Run one ``refunds`` action: exit 0, 1 when refused (the reason printed), 2 for bad
    input."""
    who = None
    if args.action in ("create", "export", "send"):
        try:
            who = operator.from_cli(args.operator)
        except errors.ConfigError as exc:
            print(f"watcher: {exc}", file=sys.stderr)
            return 2
    try:
        out = asyncio.run(_go(args, settings, who))
    except model.Refused as exc:
        print(f"watcher: refused ({exc.code}): {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
        return 1
    print(json.dumps(out, default=str, indent=None if args.json else 2))
    return 0


async def _go(args: argparse.Namespace, settings: Settings, who: str | None) -> Any:
    async with daemon.database(settings) as pool:
        if args.action == "candidates":
            return await candidates.listing(pool, settings, args.limit)
        if args.action == "list":
            async with pool.acquire() as conn:
                rows = await store.listing(conn, args.status, args.chain, args.limit)
            return [store.public(r) for r in rows]
        if args.action == "send":
            return await worker.run_pass(settings, pool)
        if args.action == "export":
            async with pool.acquire() as conn:
                row = await store.by_id(conn, args.id)
            if row is None:
                raise model.Refused(
                    404, "refund_not_found", f"no refund {args.id}", "watcher refunds list"
                )
            exp = senders.exporter(settings, row["chain"])
            if exp is None:
                raise model.Refused(
                    409,
                    "no_export_wallet",
                    f"{row['chain']} refunds are not exported here",
                    "set X402_REFUND_EVM_ADDRESS or X402_REFUND_SOLANA_ADDRESS (and no refund "
                    "key for that family)",
                )
            try:
                return await exp.export(pool, args.id, args.format or exp.formats[0])
            finally:
                await exp.aclose()
        assert who is not None
        order = requests.Order(
            payment_id=args.payment_id,
            kind=args.kind,
            reason=args.reason,
            operator=who,
            refund_key=args.refund_key,
            client="cli",
            claimed=proof.Claimed(
                destination=args.destination,
                signature=args.signature,
                claim_secret=args.claim_secret,
                amount=args.amount,
            ),
        )
        row, created = await requests.request(pool, settings, order, _code_of(settings))
        return {**store.public(row), "created": created}


def _code_of(settings: Settings) -> requests.CodeOf:
    async def code_of(chain: str, address: str) -> str:
        net = settings.evm_chain(chain)
        if not net.rpc_urls:
            raise model.Refused(
                409,
                "no_rpc_url",
                f"{chain} has no RPC URL: whether the source is a contract cannot be checked",
                "set its RPC URL: a refund's source is checked for code",
            )
        pool = rpc.RpcPool(chain, net.rpc_urls, chain_id=net.chain_id)
        try:
            return str(await pool.request("eth_getCode", [address, "latest"]))
        finally:
            await pool.aclose()

    return code_of
