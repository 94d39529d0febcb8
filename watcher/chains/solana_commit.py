"""The Solana follower's commit step: one batch of listed signatures -> one DB transaction.

The follower (:mod:`watcher.chains.solana`) reads a batch over RPC first, as
:class:`View` rows; this module then writes it in one short transaction:
records what the batch pays us, credits what is final and still pays the same,
orphans (with the reason) what finalized differently, and moves the account's
cursor and owner over the contiguous finalized prefix. No RPC happens here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from watcher import db, ledger, metrics, money
from watcher.chains import solana_outgoing
from watcher.refunds import outgoing as refunds_outgoing

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class View:
    """One listed signature as read: final or not, what it pays the account, owner after."""

    entry: dict[str, Any]
    final: bool
    found: list[ledger.Transfer]
    owner: str | None
    outgoing: Sequence[refunds_outgoing.Outgoing] = ()  # out of the refund wallet's account


@dataclass
class PassStats:
    """What one pass did (tests and logs read it)."""

    signatures: int = 0
    observed: int = 0
    credited: int = 0
    orphaned: int = 0
    pending: int = 0  # confirmed, not yet finalized


@dataclass
class _Plan:
    """What one batch asks of the transaction, sorted out before a connection is taken."""

    advancing: bool
    transfers: list[ledger.Transfer] = field(default_factory=list)
    final_payments: dict[tuple[str, int], tuple[str | None, int]] = field(default_factory=dict)
    final_sigs: list[str] = field(default_factory=list)
    new_cursor: View | None = None


async def commit(
    pool: db.Pool,
    chain: str,
    account: str,
    views: Sequence[View],
    head: int,
    advancing: bool,
    stats: PassStats,
    final_seen: dict[str, float],
) -> bool:
    """One DB transaction: record, credit what is final, move the cursor (and owner).

    ``advancing`` says whether every earlier batch of this pass was final (the
    cursor moves only over a contiguous finalized prefix); the answer says the
    same after this batch. ``final_seen`` (signature -> when first seen
    finalized) feeds the credit-delay metric; credited signatures leave it.
    """
    plan = _plan(views, advancing, stats)
    if not plan.transfers and not plan.final_sigs and plan.new_cursor is None:
        return plan.advancing  # (outgoing transfers count only when final: in final_sigs)
    async with pool.acquire() as conn, conn.transaction():
        stats.observed += len(await ledger.record(conn, plan.transfers))
        rows, good = await _judge_final(conn, chain, account, plan, stats)
        credited = await ledger.credit(conn, good)
        stats.credited += len(credited)
        await solana_outgoing.observe(conn, chain, views)  # our refunds, in this transaction
        if plan.new_cursor is not None:
            slot, sig = int(plan.new_cursor.entry["slot"]), str(plan.new_cursor.entry["signature"])
            await ledger.set_cursor(conn, chain, slot, sig, stream=account, head=head)
            await conn.execute(
                db.q("solana_set_account_owner"),
                account,
                plan.new_cursor.owner,
                slot,
                sig,
                chain,
            )
    _observe(chain, plan, rows, credited, head, final_seen)
    return plan.advancing


def _plan(views: Sequence[View], advancing: bool, stats: PassStats) -> _Plan:
    plan = _Plan(advancing)
    for v in views:
        plan.advancing = plan.advancing and v.final
        if plan.advancing:
            plan.new_cursor = v
        # A "not ours" verdict is recorded only where the owner walk is exact (the
        # contiguous finalized prefix): elsewhere it is judged again when final.
        plan.transfers += [t for t in v.found if t.state != "not_ours" or plan.advancing]
        if v.final:
            plan.final_sigs.append(v.entry["signature"])
            for t in v.found:
                if t.state == "observed":
                    plan.final_payments[(t.tx_hash, t.log_index)] = (t.token_account, t.amount)
        else:
            stats.pending += 1
    return plan


async def _judge_final(
    conn: db.Connection, chain: str, account: str, plan: _Plan, stats: PassStats
) -> tuple[list[asyncpg.Record], list[int]]:
    """This account's open rows among the final signatures, and the ids still paying the same
    (the others are orphaned here, with the reason)."""
    rows = (
        await conn.fetch(db.q("solana_open_rows_for"), plan.final_sigs, chain)
        if plan.final_sigs
        else []
    )
    rows = [r for r in rows if r["token_account"] == account]  # others: their own pass
    good = []
    for r in rows:
        now_pays = plan.final_payments.get((r["tx_hash"], r["log_index"]))
        if now_pays == (r["token_account"], int(r["amount"])):
            good.append(r["id"])
            continue
        # Seen at confirmed, different at finalized (a fork ran it differently):
        # when in doubt, do not credit; say what the finalized transaction does.
        pays, seen = now_pays[1] if now_pays else 0, int(r["amount"])
        why = f"finalized transaction pays {money.usd(pays)} USDC here, not "
        why += f"{money.usd(seen)} USDC; not credited, needs review"
        stats.orphaned += len(await ledger.orphan(conn, [r["id"]], why))
        log.error("solana_final_differs", signature=r["tx_hash"], reason=why)
    return rows, good


def _observe(
    chain: str,
    plan: _Plan,
    rows: Sequence[asyncpg.Record],
    credited: Sequence[asyncpg.Record],
    head: int,
    final_seen: dict[str, float],
) -> None:
    """After the commit: credit delays (once per credited signature) and the cursor gauges."""
    now = time.monotonic()
    credited_ids = {c["id"] for c in credited}
    credited_sigs = {r["tx_hash"] for r in rows if r["id"] in credited_ids}
    for sig in plan.final_sigs:
        seen = final_seen.pop(sig, None)
        if seen is not None and sig in credited_sigs:
            metrics.CREDIT_DELAY.labels(chain).observe(now - seen)
    if plan.new_cursor is not None:
        metrics.CURSOR_BLOCK.labels(chain).set(int(plan.new_cursor.entry["slot"]))
        metrics.LAG_BLOCKS.labels(chain).set(max(0, head - int(plan.new_cursor.entry["slot"])))
