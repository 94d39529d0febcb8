"""Ledger writes shared by every follower: record, credit, orphan, flag, cursors.

Every function takes a connection that is already inside the caller's
transaction: one converge step = one transaction (cursor and credits commit
together or not at all). Idempotency comes from ``ON CONFLICT`` and from state
guards in the SQL (``WHERE state = 'observed'``), so replaying a step, a second
watcher, or a crash between steps can never credit twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from watcher import db, metrics

RecordState = Literal["observed", "below_minimum", "not_ours"]

# A payment that arrives this long after its invoice expired still pays it
# (the same window cleanup_expired_x402_payments() waits before expiring).
INVOICE_GRACE = timedelta(hours=1)
# An EVM invoice's amount stays held this long after the invoice expires, so a late
# (or second) payment for it can never pay another invoice; a payment that could be
# meant for two invoices within this window matches neither (docs/api.md).
INVOICE_AMOUNT_HOLD = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A USDC transfer toward us, as a follower saw it on chain."""

    chain: str
    tx_hash: str  # EVM: lowercase 0x + 64 hex; Solana: base58 signature
    log_index: int  # EVM log index; Solana account index
    block_number: int  # Solana: slot
    block_hash: str | None
    token: str
    to_address: str
    amount: int  # base units, > 0
    from_address: str | None = None
    block_time: datetime | None = None
    token_account: str | None = None
    memo: str | None = None
    reference_keys: tuple[str, ...] = ()
    state: RecordState = "observed"
    reason: str | None = None
    # The transfer's identity within its transaction, which survives a reorg that
    # re-includes the transaction elsewhere (migration 0010). EVM: see
    # ``evm_scan.to_transfers``; None means the position (Solana's account index).
    transfer_key: str | None = None

    def key(self) -> str:
        return self.transfer_key if self.transfer_key is not None else str(self.log_index)


async def record(conn: db.Connection, transfers: Sequence[Transfer]) -> list[asyncpg.Record]:
    """Insert transfers (observed or below_minimum); returns rows inserted or revived."""
    if not transfers:
        return []
    cols = list(
        zip(
            *(
                (
                    t.chain,
                    t.tx_hash,
                    t.log_index,
                    t.block_number,
                    t.block_hash,
                    t.block_time,
                    t.token,
                    t.from_address,
                    t.to_address,
                    t.token_account,
                    t.amount,
                    t.state,
                    t.reason,
                    t.memo,
                    ",".join(t.reference_keys),
                    t.key(),
                )
                for t in transfers
            ),
            strict=True,
        )
    )
    rows = await conn.fetch(db.q("record_transfers"), *[list(c) for c in cols])
    # One metric update per label set, not per row: a backfill records 1e5 rows.
    for (chain, state), n in Counter((r["chain"], r["state"]) for r in rows).items():
        metrics.PAYMENTS.labels(chain, state).inc(n)
    return rows


async def credit(conn: db.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """observed -> credited; rows already credited (or orphaned) are left alone."""
    if not ids:
        return []
    rows = await conn.fetch(db.q("credit_payments"), list(ids))
    count: Counter[str] = Counter()
    units: Counter[str] = Counter()
    for r in rows:
        count[r["chain"]] += 1
        units[r["chain"]] += int(r["amount"])
    for chain, n in count.items():
        metrics.PAYMENTS.labels(chain, "credited").inc(n)
        metrics.CREDITED_BASE_UNITS.labels(chain).inc(units[chain])
    # Whichever follower credits, the invoice it pays follows in the same transaction.
    await link_invoices(conn, [r["id"] for r in rows])
    return rows


async def link_invoices(conn: db.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """Mark the invoices these credited payments pay as credited; returns (invoice, payment)."""
    if not ids:
        return []
    return await conn.fetch(db.q("link_invoices"), list(ids), INVOICE_GRACE, INVOICE_AMOUNT_HOLD)


async def orphan(conn: db.Connection, ids: Sequence[int], reason: str) -> list[asyncpg.Record]:
    """observed / below_minimum -> orphaned, with the reason ``watcher explain`` will show."""
    if not ids:
        return []
    rows = await conn.fetch(db.q("orphan_payments"), list(ids), reason)
    for r in rows:
        metrics.PAYMENTS.labels(r["chain"], "orphaned").inc()
    return rows


# What a token whose payment left the canonical chain says when refused (402).
SUSPENDED_REORGED = "payment_reorged"


async def flag_reorged_credits(
    conn: db.Connection, ids: Sequence[int], reason: str
) -> list[asyncpg.Record]:
    """Credited payments whose block was reorged out: flagged and counted, never deleted.

    Until the transfer re-lands and is confirmed again, the payment cannot be
    claimed and the token it bought (if any) is suspended.
    """
    if not ids:
        return []
    rows = await conn.fetch(db.q("flag_reorged_credits"), list(ids), reason, SUSPENDED_REORGED)
    for r in rows:
        metrics.CREDITED_REORGED.labels(r["chain"]).inc()
    return rows


async def clear_reorg_flags(conn: db.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """Flagged payments confirmed again at their new place: claimable, tokens served again."""
    if not ids:
        return []
    rows = await conn.fetch(db.q("clear_reorg_flags"), list(ids))
    for r in rows:
        metrics.CREDITED_RELANDED.labels(r["chain"]).inc()
    return rows


@dataclass(frozen=True, slots=True)
class Cursor:
    num: int
    hash: str | None
    head: int | None


async def get_cursor(conn: db.Connection, chain: str, stream: str = "logs") -> Cursor | None:
    row = await conn.fetchrow(db.q("get_cursor"), chain, stream)
    return None if row is None else Cursor(row["num"], row["hash"], row["head"])


async def set_cursor(
    conn: db.Connection,
    chain: str,
    num: int,
    hash_: str | None,
    *,
    stream: str = "logs",
    head: int | None = None,
) -> None:
    await conn.execute(db.q("set_cursor"), chain, stream, num, hash_, head)
