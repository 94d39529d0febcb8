"""The followers' hook: our outgoing refund transfers, linked to their refunds and confirmed.

Both families call these inside their converge transaction (the one that moves the
cursor), so a link commits with the blocks it came from or not at all:

* :func:`observe` with the transfers from a refund wallet the step saw, and ``deep`` (a
  transfer at or below this block/slot is confirmed). A transfer of a refund we signed
  is matched by its transaction hash (and destination, amount, token, wallet); one from an
  export wallet (signed elsewhere: a hardware wallet, a Safe) by the oldest exported
  refund it pays exactly. Linked refunds whose block is deep become ``confirmed``.
* :func:`forget` on a rewind to ``from_block``: links above it are dropped and a
  confirmed refund goes back to ``sent`` (or ``exported``); the sender re-checks it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from watcher import db, events

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One transfer out of a refund wallet as a follower saw it (EVM addresses lowercase)."""

    tx_hash: str  # EVM transaction hash, or Solana signature
    log_index: int  # EVM log index; Solana: the transfer's index in the transaction
    block_number: int  # block (EVM) or slot (Solana)
    block_hash: str | None
    from_address: str  # the refund wallet (Solana: the owner whose balance went down)
    to_address: str  # who received (Solana: the destination owner)
    amount: int  # base units
    token: str  # USDC contract or mint


async def observe(
    conn: db.Connection, chain: str, transfers: Sequence[Outgoing], deep: int
) -> list[int]:
    """Link ``transfers`` to their refunds and confirm the linked ones at or below ``deep``;
    returns the ids confirmed now. Runs in the caller's transaction."""
    for t in transfers:
        args = (t.tx_hash, t.log_index, t.block_number, t.block_hash, t.to_address, t.amount)
        rid = await conn.fetchval(db.q("refund_link_by_tx"), chain, *args, t.token, t.from_address)
        if rid is None:
            rid = await conn.fetchval(
                db.q("refund_link_exported"), chain, *args, t.token, t.from_address
            )
        if rid is not None:
            log.info("refund_transfer_seen", chain=chain, refund=rid, tx_hash=t.tx_hash)
    rows = await conn.fetch(db.q("refund_confirm_deep"), chain, deep)
    ids = [int(r["id"]) for r in rows]
    for rid in ids:
        await emit(conn, "refund.confirmed", rid)
    if ids:
        log.info("refunds_confirmed", chain=chain, refunds=ids)
    return ids


async def forget(conn: db.Connection, chain: str, from_block: int) -> list[int]:
    """A rewind to ``from_block``: unlink transfers above it; returns the refunds unlinked."""
    rows = await conn.fetch(db.q("refund_forget_above"), chain, from_block)
    if rows:
        log.warning(
            "refund_transfers_reorged",
            chain=chain,
            fork=from_block,
            refunds=[int(r["id"]) for r in rows],
        )
    return [int(r["id"]) for r in rows]


async def emit(conn: db.Connection, type_: str, refund_id: int) -> None:
    """Write one ``refund.*`` event with the refund as it is now (the caller's transaction)."""
    body = await conn.fetchval(db.q("refund_event_body"), refund_id)
    if body is not None:
        await events.emit(conn, type_, f"ref_{refund_id}", json.loads(body))
