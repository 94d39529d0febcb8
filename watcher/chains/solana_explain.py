"""``watcher explain --chain solana``: why each token movement of a transaction is (not) a credit.

:func:`explain` is pure: it takes ``getTransaction`` answers (bare or in a
JSON-RPC envelope) and returns the same JSON shape as the EVM explain::

    {"chain": "solana",
     "transactions": [{"tx": SIGNATURE, "status": "success" | "failed",
                       "transfers": [{"log_index": ACCOUNT_INDEX, "token": MINT,
                                      "from": PAYER_OWNER, "to": RECEIVING_OWNER,
                                      "amount": "BASE_UNITS", "verdict": VERDICT}]}],
     "credit_total": "BASE_UNITS"}

Verdicts, checked in this order: ``failed_tx`` (``meta.err`` set; the
transfers shown are the instructions that did not happen), ``wrong_token``
(another mint), ``not_ours`` (the account was not the receiver's when its
balance moved, or changed hands in this very transaction),
``owner_unknown`` (an old answer whose balances name no owner: only the
account's history tells, which the follower walks and explain does not; the
ledger state and reason say what the follower decided), ``zero_value``,
``below_minimum``, ``credit``. Amounts are balance deltas, the same rule the
follower applies; the owner is never taken from today's state of the account.
With ``DATABASE_URL`` set, each transfer also gets the ledger's ``state``
(``not_recorded`` when absent) and ``reason``, as the EVM explain does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from watcher import db
from watcher.chains import solana_owners, solana_tx
from watcher.keys import is_solana_pubkey
from watcher.settings import Settings


def _row(
    index: int, token: str | None, frm: str | None, to: str | None, amount: int, verdict: str
) -> dict[str, Any]:
    return {
        "log_index": index,
        "token": token,
        "from": frm,
        "to": to,
        "amount": str(amount),
        "verdict": verdict,
    }


def _ownership(tx: solana_tx.TxView, c: solana_tx.BalanceChange, receivers: Collection[str]) -> str:
    """``ours``, ``not_ours`` or ``owner_unknown`` for a change, from the transaction alone."""
    if c.delta <= 0:
        return "ours" if c.owner in receivers else "not_ours"  # nothing to credit either way
    if any(solana_owners.judge(tx, c, r, None).ours for r in receivers):
        return "ours"
    handover = any(e.account == c.account and e.kind == "set_owner" for e in tx.owner_events)
    return "owner_unknown" if c.owner is None and not handover else "not_ours"


def _verdict(token: str, ownership: str, amount: int, want: str, mn: int) -> str:
    if token != want:
        return "wrong_token"
    if ownership != "ours":
        return ownership
    if amount <= 0:
        return "zero_value"
    if amount < mn:
        return "below_minimum"
    return "credit"


def explain_one(
    tx: solana_tx.TxView, receivers: Collection[str], token: str, min_units: int
) -> dict[str, Any]:
    by_account = {c.account: c for c in tx.changes}
    rows: list[dict[str, Any]] = []
    if tx.failed:
        for t in tx.transfers:
            dest = by_account.get(t.destination)
            src = by_account.get(t.source)
            index = tx.account_keys.index(t.destination) if t.destination in tx.account_keys else -1
            rows.append(
                _row(
                    index,
                    t.mint or (dest.mint if dest else None),
                    src.owner if src else None,
                    dest.owner if dest else None,
                    t.amount,
                    "failed_tx",
                )
            )
        return {"tx": tx.signature, "status": "failed", "transfers": rows}
    listed: set[str] = set()
    for c in tx.changes:
        if c.delta <= 0:
            continue
        listed.add(c.account)
        verdict = _verdict(c.mint, _ownership(tx, c, receivers), c.delta, token, min_units)
        rows.append(_row(c.account_index, c.mint, tx.payer_for(c.mint), c.owner, c.delta, verdict))
    for t in tx.transfers:  # zero-value transfers move nothing but are worth showing
        dest = by_account.get(t.destination)
        if t.amount == 0 and t.destination not in listed and dest is not None:
            listed.add(t.destination)
            rows.append(_row(dest.account_index, dest.mint, None, dest.owner, 0, "zero_value"))
    return {"tx": tx.signature, "status": "success", "transfers": rows}


def explain(
    answers: Sequence[Any],
    *,
    receivers: Collection[str],
    token: str,
    min_units: int,
) -> dict[str, Any]:
    """The explain document for getTransaction answers (bare or enveloped)."""
    txs = [explain_one(solana_tx.view(a), receivers, token, min_units) for a in answers]
    total = sum(int(t["amount"]) for tx in txs for t in tx["transfers"] if t["verdict"] == "credit")
    return {"chain": "solana", "transactions": txs, "credit_total": str(total)}


# ---- command line -------------------------------------------------------------------------
# Same arguments as the EVM explain (``tx``, ``--from-file``, ``--receiver`` repeatable,
# ``--token``, ``--json``) so one ``watcher explain`` parser serves every chain.


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tx", nargs="?", metavar="SIGNATURE", help="the transaction signature")
    p.add_argument(
        "--from-file",
        metavar="PATH",
        help="a saved getTransaction answer (bare result or JSON-RPC envelope), or a list of them",
    )
    p.add_argument(
        "--receiver",
        action="append",
        default=[],
        metavar="OWNER",
        help="receiving wallet (repeatable; default X402_SOLANA_PAYMENT_ADDRESS)",
    )
    p.add_argument("--token", metavar="MINT", help="USDC mint (default X402_SOLANA_USDC_MINT)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


async def _fetch(settings: Settings, signature: str) -> Any:
    """The transaction at confirmed (its owners come from itself, never from today's state)."""
    from watcher.chains import solana

    client = solana.rpc_pool(settings.solana_chain())
    try:
        return await client.request(
            "getTransaction", [signature, {**solana.TX_CONFIG, "commitment": "confirmed"}]
        )
    finally:
        await client.aclose()


def _answers(data: Any) -> list[Any]:
    """A file holds one answer, or a list of answers (bare or enveloped)."""
    return list(data) if isinstance(data, list) else [data]


async def explain_solana(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    """``watcher explain --chain solana``: (output, exit code); 2 for bad usage or input."""
    receivers = list(getattr(args, "receiver", None) or [])
    if isinstance(args.receiver, str):
        receivers = [args.receiver]
    if not receivers and settings.solana_chain().owner:
        receivers = [settings.solana_chain().owner]
    token = args.token or settings.solana_chain().usdc_mint
    if not receivers or not all(is_solana_pubkey(r) for r in receivers):
        return "watcher explain: give --receiver OWNER (or set X402_SOLANA_PAYMENT_ADDRESS)", 2
    if not is_solana_pubkey(token):
        return f"watcher explain: --token {token!r} is not a Solana public key", 2
    if not args.tx and not args.from_file:
        return "watcher explain: give a SIGNATURE or --from-file PATH", 2
    answers: list[Any] = []
    try:
        if args.from_file:
            text = await asyncio.to_thread(Path(args.from_file).read_text, encoding="utf-8")
            answers += _answers(json.loads(text))
        if args.tx and args.from_file:
            answers = [a for a in answers if solana_tx.view(a).signature == args.tx]
            if not answers:
                return f"watcher explain: {args.tx} is not in {args.from_file}", 1
        elif args.tx:
            if not settings.solana_chain().rpc_urls:
                return "watcher explain: set X402_SOLANA_RPC_URL to fetch a signature", 2
            answer = await _fetch(settings, args.tx)
            if answer is None:
                return f"watcher explain: {args.tx}: unknown to the node (at confirmed)", 1
            answers.append(answer)
        doc = explain(
            answers, receivers=receivers, token=token, min_units=settings.min_payment_units
        )
    except (OSError, ValueError) as exc:  # MalformedTransaction and JSON errors are ValueErrors
        return f"watcher explain: {exc}", 2
    note = None
    if settings.database_url is not None:
        note = await annotate_from_db(doc, settings.database_url.get_secret_value())
    if args.json:
        return json.dumps(doc, indent=2), 0
    return render_text(doc) + (f"\nnote: {note}" if note else ""), 0


async def annotate_from_db(doc: dict[str, Any], dsn: str) -> str | None:
    """Add each transfer's ledger ``state`` (``not_recorded`` when absent); a note on failure."""
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"database unreachable ({type(exc).__name__}): no ledger state shown"
    try:
        for tx in doc["transactions"]:
            rows = {
                r["log_index"]: r
                for r in await conn.fetch(db.q("payments_by_tx"), "solana", tx["tx"])
            }
            for t in tx["transfers"]:
                row = rows.get(t["log_index"])
                t["state"] = "not_recorded" if row is None else row["state"]
                if row is not None and row["reason"]:
                    t["reason"] = row["reason"]
    finally:
        await conn.close()
    return None


def render_text(doc: dict[str, Any]) -> str:
    lines = []
    for tx in doc["transactions"]:
        lines.append(f"{tx['tx']}  {tx['status']}")
        if not tx["transfers"]:
            lines.append(
                "  (transaction failed: nothing moved)"
                if tx["status"] == "failed"
                else "  (no token balance increased)"
            )
        for t in tx["transfers"]:
            lines.append(
                f"  #{t['log_index']:<3} {t['verdict']:<13} {t['amount']:>16} "
                f"{t['token']}  {t['from']} -> {t['to']}"
                + (f"  [{t['state']}]" if "state" in t else "")
            )
            if "reason" in t:
                lines.append(f"       {t['reason']}")
    lines.append(f"credit total: {doc['credit_total']} base units")
    return "\n".join(lines)
