"""``watcher explain`` on a Solana network: why each token movement is (not) a credit.

:func:`judge` is pure: it takes ``getTransaction`` answers (bare or in a
JSON-RPC envelope) and returns the common report (:mod:`watcher.explain.model`),
the same shape as on EVM; ``log_index`` is the index of the receiving token
account in the transaction's account keys (the ledger's key), ``from`` and
``to`` are owners (wallets), not token accounts.

Verdicts, checked in this order: ``failed_tx`` (``meta.err`` set; the
transfers shown are the instructions that did not happen), ``wrong_token``
(another mint), ``not_ours`` (the account was not the receiver's when its
balance moved, or changed hands in this very transaction),
``owner_unknown`` (an old answer whose balances name no owner: only the
account's history tells, which the follower walks and explain does not; the
ledger state and reason say what the follower decided), ``zero_value``,
``below_minimum``, ``credit``. Amounts are balance deltas, the same rule the
follower applies; the owner is never taken from today's state of the account.
When the ledger is read (:mod:`.state`), each transfer also gets its ``state``
(``not_recorded`` when absent) and ``reason``, as on EVM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from watcher import chain_settings, keys
from watcher.chains import solana, solana_owners, solana_tx
from watcher.explain import model
from watcher.settings import Settings, SolanaChain


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


def judge_one(
    tx: solana_tx.TxView, receivers: Collection[str], token: str, min_units: int
) -> model.Tx:
    """The verdict on every token movement of one transaction."""
    by_account = {c.account: c for c in tx.changes}
    rows: list[model.Transfer] = []
    if tx.failed:
        for t in tx.transfers:
            dest = by_account.get(t.destination)
            src = by_account.get(t.source)
            index = tx.account_keys.index(t.destination) if t.destination in tx.account_keys else -1
            rows.append(
                model.Transfer(
                    index,
                    t.mint or (dest.mint if dest else None),
                    src.owner if src else None,
                    dest.owner if dest else None,
                    t.amount,
                    "failed_tx",
                    block=tx.slot,
                )
            )
        return model.Tx(tx.signature, "failed", rows)
    listed: set[str] = set()
    for c in tx.changes:
        if c.delta <= 0:
            continue
        listed.add(c.account)
        verdict = _verdict(c.mint, _ownership(tx, c, receivers), c.delta, token, min_units)
        payer = tx.payer_for(c.mint)
        rows.append(
            model.Transfer(c.account_index, c.mint, payer, c.owner, c.delta, verdict, tx.slot)
        )
    for t in tx.transfers:  # zero-value transfers move nothing but are worth showing
        dest = by_account.get(t.destination)
        if t.amount == 0 and t.destination not in listed and dest is not None:
            listed.add(t.destination)
            rows.append(
                model.Transfer(
                    dest.account_index, dest.mint, None, dest.owner, 0, "zero_value", tx.slot
                )
            )
    return model.Tx(tx.signature, "success", rows)


def judge(
    chain: str,
    answers: Sequence[Any],
    *,
    receivers: Collection[str],
    token: str,
    min_units: int,
) -> model.Report:
    """The report on ``getTransaction`` answers (bare or enveloped)."""
    txs = [judge_one(solana_tx.view(a), receivers, token, min_units) for a in answers]
    return model.Report(chain, token, frozenset(receivers), txs, index_label="account")


# ---- command line -------------------------------------------------------------------------


async def _fetch(chain: SolanaChain, signature: str) -> Any:
    """The transaction at confirmed (its owners come from itself, never from today's state)."""
    client = solana.rpc_pool(chain)
    try:
        return await client.request(
            "getTransaction", [signature, {**solana.TX_CONFIG, "commitment": "confirmed"}]
        )
    finally:
        await client.aclose()


def _answers(data: Any) -> list[Any]:
    """A file holds one answer, or a list of answers (bare or enveloped)."""
    return list(data) if isinstance(data, list) else [data]


def _usage(args: argparse.Namespace, settings: Settings) -> tuple[list[str], str] | model.Refusal:
    """The receivers and the mint to judge against, or why the arguments do not do."""
    chain = settings.solana_chain(args.chain)
    receivers = list(args.receiver or [])
    if not receivers and chain.owner:
        receivers = [chain.owner]
    token = args.token or chain.usdc_mint
    if not receivers or not all(keys.is_solana_pubkey(r) for r in receivers):
        var = chain_settings.prefix(chain.network).upper() + "PAYMENT_ADDRESS"
        why = f"watcher explain: give --receiver OWNER (or set {var})"
        return model.Refusal(why, 2)
    if not keys.is_solana_pubkey(token):
        return model.Refusal(f"watcher explain: --token {token!r} is not a Solana public key", 2)
    if not args.tx and not args.from_file:
        return model.Refusal("watcher explain: give a SIGNATURE or --from-file PATH", 2)
    return receivers, token


async def report(args: argparse.Namespace, settings: Settings) -> model.Report | model.Refusal:
    """The report on a Solana signature (live, at confirmed) or a saved file, or why none."""
    usage = _usage(args, settings)
    if isinstance(usage, model.Refusal):
        return usage
    receivers, token = usage
    answers: list[Any] = []
    try:
        if args.from_file:
            text = await asyncio.to_thread(Path(args.from_file).read_text, encoding="utf-8")
            answers += _answers(json.loads(text))
        if args.tx and args.from_file:
            answers = [a for a in answers if solana_tx.view(a).signature == args.tx]
            if not answers:
                why = f"watcher explain: {args.tx} is not in {args.from_file}"
                return model.Refusal(why, 1)
        elif args.tx:
            chain = settings.solana_chain(args.chain)
            if not chain.rpc_urls:
                var = chain_settings.prefix(chain.network).upper() + "RPC_URL"
                return model.Refusal(f"watcher explain: set {var} to fetch a signature", 2)
            answer = await _fetch(chain, args.tx)
            if answer is None:
                why = f"watcher explain: {args.tx}: unknown to the node (at confirmed)"
                return model.Refusal(why, 1)
            answers.append(answer)
        return judge(
            args.chain,
            answers,
            receivers=receivers,
            token=token,
            min_units=settings.min_payment_units,
        )
    except (OSError, ValueError) as exc:  # MalformedTransaction and JSON errors are ValueErrors
        return model.Refusal(f"watcher explain: {exc}", 2)
