"""Reorg handling for the EVM follower: find the fork point, rewind, account for the losses.

Called when the next block does not extend the cursor. The fork point is the
newest stored window block whose hash the node still reports. Above it:

* observed (and below-minimum) payments become ``orphaned`` (the re-scan revives
  any that the new branch includes again, at their new block);
* credited payments whose block hash the node no longer reports are flagged
  ``reorged_after_credit``, logged at error and counted, never deleted;
* the window and the cursor go back to the fork point, in one transaction.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import structlog

from watcher import db, errors, ledger, metrics, money
from watcher.chains.evm_logs import Header
from watcher.refunds import outgoing
from watcher.settings import EvmChain

log = structlog.get_logger(__name__)

_CHUNK = 8  # headers asked for at once while walking back


class Follower(Protocol):
    """What a rewind needs from the follower (``evm_follower.EvmFollower``), named here so that
    this module does not import the one that calls it."""

    @property
    def name(self) -> str: ...

    @property
    def window(self) -> int: ...

    @property
    def chain(self) -> EvmChain: ...

    async def header(self, number: int, *, cached: bool = True) -> Header: ...

    def connection(
        self, *, transaction: bool = False
    ) -> AbstractAsyncContextManager[db.Connection]: ...


async def _canonical(f: Follower, numbers: list[int]) -> dict[int, str | None]:
    async def one(n: int) -> tuple[int, str | None]:
        try:
            h: Header = await f.header(n, cached=False)
        except errors.RpcResponseError:
            return n, None  # the node has no such block (any more)
        return n, h.hash

    out: dict[int, str | None] = {}
    for i in range(0, len(numbers), _CHUNK):
        out.update(await asyncio.gather(*(one(n) for n in numbers[i : i + _CHUNK])))
    return out


async def _fork_point(f: Follower, cursor: ledger.Cursor) -> tuple[int, str | None]:
    async with f.connection() as conn:
        stored = await conn.fetch(db.q("evm_window"), f.name, cursor.num, 2 * f.window + 1)
    for i in range(0, len(stored), _CHUNK):
        chunk = stored[i : i + _CHUNK]
        canon = await _canonical(f, [r["num"] for r in chunk])
        for r in chunk:
            if canon[r["num"]] == r["hash"]:
                return r["num"], r["hash"]
    # Deeper than everything we kept: go back below the window and re-scan it all.
    bottom = stored[-1]["num"] if stored else cursor.num
    return max(bottom - 1, 0), None


async def rewind(f: Follower, cursor: ledger.Cursor) -> ledger.Cursor:
    """Rewind the ledger of ``f``'s chain to the fork point below ``cursor``; the new cursor."""
    fork, fork_hash = await _fork_point(f, cursor)
    depth = cursor.num - fork
    if depth <= 0:
        log.info("reorg_false_alarm", cursor=cursor.num)  # a stale cached header, nothing lost
        return cursor
    async with f.connection() as conn:
        above = await conn.fetch(db.q("evm_payments_above"), f.name, fork)
    credited = [r for r in above if r["state"] in ("credited", "claimed")]
    canon = await _canonical(f, sorted({r["block_number"] for r in credited}))
    lost = [r["id"] for r in credited if canon[r["block_number"]] != r["block_hash"]]
    observed = [r["id"] for r in above if r["state"] in ("observed", "below_minimum")]
    reason = f"block reorged out (fork at {fork}, depth {depth})"
    async with f.connection(transaction=True) as conn:
        await ledger.orphan(conn, observed, reason)
        flagged = await ledger.flag_reorged_credits(conn, lost, reason)
        await conn.execute(db.q("evm_forget_blocks"), f.name, fork)
        await outgoing.forget(conn, f.name, fork)  # refund transfers above: seen again later
        await ledger.set_cursor(conn, f.name, fork, fork_hash, head=cursor.head)
    metrics.REORGS.labels(f.name).inc()
    metrics.REORG_DEPTH.labels(f.name).observe(depth)
    if depth >= f.chain.confirmations or fork_hash is None:
        metrics.DEEP_REORGS.labels(f.name).inc()
    if flagged:
        log.error(
            "credited_payment_reorged_out",
            fork=fork,
            depth=depth,
            payments=[(r["tx_hash"], money.units_text(r["amount"])) for r in flagged],
        )
    else:
        log.warning("reorg", fork=fork, depth=depth, orphaned=len(observed))
    return ledger.Cursor(fork, fork_hash, cursor.head)
