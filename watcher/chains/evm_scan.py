"""What one converge step fetched, and the logs -> ledger rows conversion (the hot path)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import structlog

from watcher import db, errors, ledger, money
from watcher.chains.evm_logs import Header, RawTransfer, parse_header, parse_transfer
from watcher.refunds import outgoing
from watcher.settings import EvmChain

log = structlog.get_logger(__name__)


class Matcher(Protocol):
    """Who we are on this chain (the follower satisfies it)."""

    chain: EvmChain
    receivers: frozenset[str]
    min_units: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything one step writes in its transaction."""

    frm: int
    to: int
    to_hash: str
    head: int
    headers: Sequence[Header]
    transfers: list[ledger.Transfer]
    seen_at: float  # monotonic time the head that allowed this step was seen
    deep: int  # transfers in blocks up to this one are confirmed (credit them)
    # Transfers out of a refund wallet (evm_outgoing); None while no wallet is watched.
    outgoing: Sequence[outgoing.Outgoing] | None = None

    def block_columns(self) -> tuple[list[int], list[str], list[str], list[datetime]]:
        hs = self.headers
        return (
            [h.number for h in hs],
            [h.hash for h in hs],
            [h.parent_hash for h in hs],
            [h.time for h in hs],
        )


def to_transfers(
    m: Matcher,
    logs: Sequence[Mapping[str, Any]],
    frm: int,
    to: int,
    hashes: Mapping[int, str],
    headers: Mapping[int, Header],
) -> list[ledger.Transfer]:
    """Our USDC transfers among ``logs`` (already filtered by the node, checked again here).

    Raises ``RpcResponseError`` when the answer contradicts what we asked for
    (a log outside the range, pending, or from a block hash other than the one
    we verified): the step is retried rather than trusting a confused node.
    """
    usdc, receivers, min_units, name = m.chain.usdc, m.receivers, m.min_units, m.chain.name
    out: list[ledger.Transfer] = []
    # A transfer's identity: (from, to, amount) and how many identical transfers came
    # before it in the same transaction. Unlike the log index it survives the
    # transaction being re-mined elsewhere (docs/evm.md, "Reorgs"). A transaction's
    # logs all come in one answer (a step covers whole blocks).
    first: dict[tuple[str, str, str, int], int] = {}  # identity -> index in out
    repeats: dict[tuple[str, str, str, int], list[int]] = {}  # only identities seen twice
    for lg in logs:
        raw = parse_transfer(lg)
        if raw is None:
            continue  # NFT-style (4 topics), malformed or removed: never a payment
        n, block_hash = raw.block_number, raw.block_hash
        if n is None or block_hash is None or not frm <= n <= to:
            raise errors.RpcResponseError(f"{name}: eth_getLogs answered a log outside {frm}-{to}")
        expected = hashes.get(n)
        if expected is not None and expected != block_hash:
            raise errors.RpcResponseError(f"{name}: log of block {n} from another branch")
        if raw.token != usdc or raw.to_address not in receivers or raw.amount <= 0:
            continue
        ident = (raw.tx_hash, raw.from_address, raw.to_address, raw.amount)
        if ident in first:  # rare: no list is built per log on the hot path
            repeats.setdefault(ident, [first[ident]]).append(len(out))
        else:
            first[ident] = len(out)
        out.append(_transfer(name, raw, n, block_hash, headers.get(n), min_units))
    _number_repeats(out, repeats)
    return out


def _number_repeats(
    out: list[ledger.Transfer], repeats: Mapping[tuple[str, str, str, int], list[int]]
) -> None:
    """Identical transfers in one transaction: their keys count them in log order."""
    for same in repeats.values():
        same.sort(key=lambda i: out[i].log_index)
        for nth, i in enumerate(same):
            t = out[i]
            key = f"{t.from_address}:{t.to_address}:{t.amount}:{nth}"
            out[i] = dataclasses.replace(t, transfer_key=key)


def _transfer(
    name: str, raw: RawTransfer, n: int, block_hash: str, header: Header | None, min_units: int
) -> ledger.Transfer:
    """One of our transfers as a ledger row, judged against the minimum; its key says it is
    the first of its identity in the transaction (``_number_repeats`` fixes the others)."""
    state, reason = ledger.judge(raw.amount, min_units)
    return ledger.Transfer(
        chain=name,
        tx_hash=raw.tx_hash,
        log_index=raw.log_index,
        block_number=n,
        block_hash=block_hash,
        token=raw.token,
        to_address=raw.to_address,
        amount=raw.amount,
        from_address=raw.from_address,
        block_time=raw.block_time or (header.time if header else None),
        state=state,
        reason=reason,
        transfer_key=f"{raw.from_address}:{raw.to_address}:{raw.amount}:0",
    )


async def commit(
    conn: db.Connection, chain: EvmChain, batch: Batch, *, keep_blocks: int
) -> list[asyncpg.Record]:
    """One step's writes, inside the caller's transaction; returns the rows credited.

    Transfers in blocks up to ``batch.deep`` are confirmed and were verified in
    this very step, so they are written as credited at once; the others are
    recorded as observed and credited by a later step once deep enough.
    """
    deep = batch.deep
    now: list[ledger.Transfer] = []
    later: list[ledger.Transfer] = []
    for t in batch.transfers:
        (now if t.state == "observed" and t.block_number <= deep else later).append(t)
    await ledger.record(conn, later)
    credited = await ledger.record_credited(conn, now)
    await conn.execute(db.q("evm_upsert_blocks"), chain.name, *batch.block_columns())
    await conn.execute(db.q("evm_prune_blocks"), chain.name, batch.to - keep_blocks)
    await ledger.set_cursor(conn, chain.name, batch.to, batch.to_hash, head=batch.head)
    rows = await conn.fetch(db.q("evm_confirmed_ids"), chain.name, deep)
    credited += await ledger.credit(conn, [r["id"] for r in rows])
    if batch.outgoing is not None:  # our refunds: linked, and confirmed once deep
        await outgoing.observe(conn, chain.name, batch.outgoing, deep)
    # Credited payments a reorg took away and this chain re-included: confirmed again.
    relanded = await conn.fetch(db.q("evm_relanded_ids"), chain.name, deep)
    cleared = await ledger.clear_reorg_flags(conn, [r["id"] for r in relanded])
    if cleared:
        log.warning(
            "credited_payment_relanded",
            payments=[
                (r["tx_hash"], r["block_number"], money.units_text(r["amount"])) for r in cleared
            ],
        )
    return credited


def log_list(got: object, chain: str) -> list[dict[str, Any]]:
    """An eth_getLogs answer, or RpcResponseError when it is not a list."""
    if not isinstance(got, list):
        raise errors.RpcResponseError(f"{chain}: eth_getLogs did not return a list")
    return got


def header_or_error(got: object, which: str, chain: str) -> Header:
    """A header from an eth_getBlockByNumber answer; RpcResponseError when it is missing."""
    if not isinstance(got, dict):
        raise errors.RpcResponseError(f"{chain}: block {which} is not available yet")
    try:
        return parse_header(got)
    except ValueError as exc:
        raise errors.RpcResponseError(f"{chain}: block {which}: {exc}") from exc
