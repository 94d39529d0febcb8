"""The ledger's side of ``watcher explain``: what the follower recorded for each transfer."""

from __future__ import annotations

import asyncpg

from watcher import db, events
from watcher.explain import model


async def annotate(report: model.Report, dsn: str, *, cursor_stream: str | None = None) -> None:
    """Add each transfer's ledger ``state`` and ``reason``; a note when the DB is unreachable.

    ``cursor_stream`` names the follower's cursor whose head gives confirmations
    (EVM: ``logs``); transfers that already have a count (from the node) keep it.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        report.notes.append(f"database unreachable ({type(exc).__name__}): no ledger state shown")
        return
    try:
        head = None
        if cursor_stream is not None:
            cur = await conn.fetchrow(db.q("get_cursor"), report.chain, cursor_stream)
            head = cur["head"] if cur is not None else None
        for tx in report.transactions:
            rows = {
                r["log_index"]: r
                for r in await conn.fetch(db.q("payments_by_tx"), report.chain, tx.tx)
            }
            for t in tx.transfers:
                row = rows.get(t.index)
                t.state = "not_recorded" if row is None else _state(row)
                if row is not None and row["reason"]:
                    t.reason = row["reason"]
                if row is not None:
                    t.events = [
                        _event(e) for e in await conn.fetch(db.q("explain_events"), row["id"])
                    ]
                if head is not None and t.block is not None and t.confirmations is None:
                    t.confirmations = max(0, head - t.block + 1)
    finally:
        await conn.close()


def _event(row: asyncpg.Record) -> str:
    """``payment.credited (evt_12; webhooks: 1 delivered, 2 pending)``."""
    counts = [f"{row[k]} {k}" for k in ("delivered", "pending", "failed", "cancelled") if row[k]]
    hooks = f"; webhooks: {', '.join(counts)}" if counts else ""
    return f"{row['type']} ({events.public_id(row['id'])}{hooks})"


def _state(row: asyncpg.Record) -> str:
    state: str = row["state"]
    if row["reorged_after_credit"]:
        # Off the canonical chain since it was credited: buys nothing for now.
        state += (
            " (reorged after credit: re-included, suspended until confirmed)"
            if row["relanded_at"] is not None
            else " (reorged after credit: not claimable, its token suspended)"
        )
    return state
