"""Who sent each transaction of a step's transfers (issue 16: screening the tx sender).

A USDC transfer routed through a contract (a smart wallet, a router) has the
contract as the Transfer log's ``from``; the screen must see the account that sent
the transaction too. Learned only when the screen needs addresses on this chain
(``screening.core.current().needs_addresses``): otherwise the follower makes no
extra call. Runs after the step's fetch and before its transaction.

Cost: a backfill's transfers toward one merchant are sparse (a few per block at
most), so the follower asks ``eth_getTransactionByHash`` once per distinct
transaction, in JSON-RPC batches of :data:`BATCH` on one endpoint, at most
:data:`CONCURRENCY` batches at a time. Where a step's transfers crowd into few
blocks (more than :data:`PER_BLOCK` transactions per block on average) one
``eth_getBlockByNumber(n, true)`` per block costs fewer calls, so it asks that.
tests/unit/test_evm_senders.py counts both shapes. A node that does not know
the transaction leaves its sender unknown (the payment is then held,
``sender_unknown``); an answer from another block than the log's is a confused
node or a reorg in between: the step is retried.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from watcher import errors, ledger
from watcher.screening import core, prefetch

BATCH = 100
CONCURRENCY = 4
PER_BLOCK = 4


class Rpc(Protocol):
    """The RPC pool's batch call (``watcher.rpc.RpcPool``)."""

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]: ...


async def learn(
    rpc: Rpc, chain: str, transfers: Sequence[ledger.Transfer]
) -> list[ledger.Transfer]:
    """``transfers`` with their transaction senders and the oracle's answers, when the
    process's screen needs the addresses on ``chain``; unchanged (no call) otherwise."""
    if not transfers or not core.current().needs_addresses(chain):
        return list(transfers)
    senders = await senders_of(rpc, chain, transfers)
    out = [dataclasses.replace(t, tx_sender=senders.get(t.tx_hash)) for t in transfers]
    wanted = [a for t in out for a in (t.from_address, t.tx_sender) if a is not None]
    answers = await prefetch.answers(chain, wanted)
    if answers is None:
        return out
    return [dataclasses.replace(t, oracle_answers=_own(t, answers)) for t in out]


def _own(t: ledger.Transfer, answers: Mapping[str, bool | None]) -> dict[str, bool | None]:
    return {a: answers.get(a) for a in (t.from_address, t.tx_sender) if a is not None}


async def senders_of(rpc: Rpc, chain: str, transfers: Sequence[ledger.Transfer]) -> dict[str, str]:
    """tx hash -> its sender (lowercase 0x), for the transactions the node knows."""
    where = {t.tx_hash: (t.block_number, t.block_hash) for t in transfers}
    blocks = {place for place in where.values()}
    if len(where) > PER_BLOCK * len(blocks):
        calls = [("eth_getBlockByNumber", [hex(n), True]) for n, _ in sorted(blocks)]
        answers = await _batched(rpc, calls)
        return _from_blocks(chain, answers, where)
    hashes = sorted(where)
    answers = await _batched(rpc, [("eth_getTransactionByHash", [h]) for h in hashes])
    out: dict[str, str] = {}
    for h, tx in zip(hashes, answers, strict=True):
        sender = _sender(chain, tx, h, where[h][1])
        if sender is not None:
            out[h] = sender
    return out


async def _batched(rpc: Rpc, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(chunk: list[tuple[str, list[Any]]]) -> list[Any]:
        async with gate:
            return await rpc.batch(chunk)

    chunks = [calls[i : i + BATCH] for i in range(0, len(calls), BATCH)]
    parts = await asyncio.gather(*(one(c) for c in chunks))
    return [a for part in parts for a in part]


def _sender(chain: str, tx: Any, tx_hash: str, block_hash: str | None) -> str | None:
    if not isinstance(tx, dict):
        return None  # the node does not know it: unknown, held if the screen needs it
    got_hash = tx.get("blockHash")
    if block_hash is not None and got_hash is not None and got_hash.lower() != block_hash:
        raise errors.RpcResponseError(f"{chain}: transaction {tx_hash} answered from another block")
    sender = tx.get("from")
    if not isinstance(sender, str) or len(sender) != 42 or not sender.startswith("0x"):
        return None
    return sender.lower()


def _from_blocks(
    chain: str, blocks: Sequence[Any], where: Mapping[str, tuple[int, str | None]]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for tx in block.get("transactions") or ():
            if not isinstance(tx, dict):
                continue
            h = str(tx.get("hash", "")).lower()
            if h not in where:
                continue
            sender = _sender(chain, {**tx, "blockHash": block.get("hash")}, h, where[h][1])
            if sender is not None:
                out[h] = sender
    return out
