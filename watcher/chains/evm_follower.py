"""The EVM follower: USDC ``Transfer`` logs to our receiving addresses on Base and Ethereum.

One converge step (shovel's ``Converge``) = fetch over RPC, then one database
transaction that records transfers, extends the canonical window, moves the
cursor and credits what is now deep enough. A cancel anywhere rolls the step
back; the next run resumes from the committed cursor. No DB connection is held
across an RPC await.

* Far below the head (older than the reorg window) the follower walks in
  ``eth_getLogs`` block ranges that adapt to the node: shrink on a range/size
  refusal (honouring a suggested range), shrink when a range returned many
  logs, grow on success.
* Inside the window (the last ``confirmations + margin`` blocks) it walks block
  by block: each header must link to the previous one, and logs are fetched by
  block hash (EIP-234), so they come from exactly the block we checked. A
  block whose logs bloom rules out a USDC transfer to us costs no log query.
* A parent-hash mismatch is a reorg: find the fork point by comparing the
  stored window with the node, orphan observed payments above it, flag (never
  delete) credited ones whose block is gone, rewind the cursor, re-scan.
* A payment is credited when its block is ``confirmations`` deep below the
  cursor and the block hash it was seen in is still the canonical one.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from watcher import db, errors, ledger, metrics, progress, rpc
from watcher.chains import evm_outgoing, evm_reorg, evm_scan
from watcher.chains.evm_heads import HeadSubscription
from watcher.chains.evm_logs import TRANSFER_TOPIC, BloomFilter, Header, topic_for
from watcher.chains.evm_scan import Batch, to_transfers
from watcher.settings import EvmChain

log = structlog.get_logger(__name__)

BURST_MAX_FAILURES = 8


@dataclass(frozen=True)
class Options:
    """Tuning knobs; the defaults suit public RPC providers."""

    initial_range: int = 8  # blocks per eth_getLogs when backfilling (grows quickly)
    max_range: int = 5000
    target_logs: int = 20000  # aim for about this many logs per eth_getLogs answer
    topic_limit: int = 100  # more receivers than this: fetch all USDC Transfers, match locally
    window_margin: int = 16  # blocks walked one by one = confirmations + margin
    tip_batch: int = 32  # blocks per step near the head
    default_backfill: int = 5000  # no cursor and no start block: start this far below head
    poll_interval: float = 1.0  # head polling while no websocket is up
    ws_safety_poll: float = 10.0  # poll anyway this often while the websocket is silent
    max_backoff: float = 5.0
    use_bloom: bool = True
    ws: bool = True
    progress_interval: float = 10.0  # seconds between backfill_progress logs


@dataclass
class _State:
    cursor: ledger.Cursor | None = None
    head: int | None = None
    head_seen_at: float = 0.0
    headers: dict[int, Header] = field(default_factory=dict)  # from newHeads, bounded
    poll_next: bool = False  # ask the node for the head even though the websocket is up


class EvmFollower:
    """Follows one EVM chain into the ledger."""

    def __init__(
        self,
        chain: EvmChain,
        pool: db.Pool,
        rpc_pool: rpc.RpcPool,
        *,
        min_payment_units: int,
        options: Options | None = None,
        refund_wallets: Sequence[str] = (),
    ) -> None:
        self.chain = chain
        self.name = chain.name
        self.pool = pool
        self.rpc = rpc_pool
        self.min_units = min_payment_units
        self.opt = options or Options()
        self.receivers = frozenset(chain.receivers)
        self.topics: list[str] | None = (
            sorted(topic_for(r) for r in self.receivers)
            if len(self.receivers) <= self.opt.topic_limit
            else None
        )
        self.bloom = BloomFilter(chain.usdc, self.receivers)
        self.outgoing = evm_outgoing.Watch(chain.usdc, refund_wallets)  # our refunds leaving
        self.window = chain.confirmations + self.opt.window_margin
        self.range = self.opt.initial_range
        self.range_ceiling = self.opt.max_range  # lowered by the provider's refusals
        self.state = _State()
        self.wake = asyncio.Event()
        self.heads = HeadSubscription(chain.name, chain.ws_urls, self._saw_head)
        self.heads.on_connect = self._ws_connected
        self._ahead: tuple[int, asyncio.Task[Batch]] | None = None  # prefetched next range
        self._backfill: progress.BackfillProgress | None = None  # while far behind the head

    # ---- main loop -------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event, *, burst: bool = False, until_block: int | None = None
    ) -> None:
        """Follow until ``stop``; ``burst`` drains to the head and returns; ``until_block``
        returns once the cursor has reached that block."""
        structlog.contextvars.bind_contextvars(chain=self.name)
        ws_task = None
        if self.chain.ws_urls and self.opt.ws and not burst:
            ws_task = asyncio.create_task(self.heads.run(stop), name=f"{self.name}-heads")
        try:
            await self._load_cursor()
            failures = 0
            while not stop.is_set():
                try:
                    more = await self.step()
                    failures = 0
                    progress.beat(self.name)  # feeds READY=1 and the systemd watchdog
                except (errors.RpcError, errors.DatabaseError) as exc:
                    failures += 1
                    log.warning("step_failed", error=str(exc), attempt=failures)
                    if burst and failures >= BURST_MAX_FAILURES:
                        raise  # a one-off drain reports the failure instead of waiting forever
                    await _sleep(stop, min(self.opt.max_backoff, 0.1 * 2**failures))
                    continue
                cur = self.state.cursor
                if until_block is not None and cur is not None and cur.num >= until_block:
                    return
                if burst and not more:
                    return
                if not more:
                    await self._idle(stop)
        finally:
            self._drop_ahead()
            if ws_task is not None:
                ws_task.cancel()
                await asyncio.gather(ws_task, return_exceptions=True)

    async def _idle(self, stop: asyncio.Event) -> None:
        timeout = self.opt.ws_safety_poll if self.heads.connected else self.opt.poll_interval
        waiter = asyncio.create_task(self.wake.wait())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            waiter.cancel()
            stopper.cancel()

    def _ws_connected(self) -> None:
        # Heads pushed before the outage are stale: ask for the head once, then fill the gap.
        self.state.poll_next = True
        self.wake.set()

    def _saw_head(self, header: Header) -> None:
        now = time.monotonic()
        self.state.headers[header.number] = header
        if len(self.state.headers) > 4 * self.window:
            for n in sorted(self.state.headers)[: -2 * self.window]:
                del self.state.headers[n]
        # The node's current view, even if lower (a reorg onto a shorter branch).
        self.state.head, self.state.head_seen_at = header.number, now
        metrics.HEAD_BLOCK.labels(self.name).set(header.number)
        metrics.LAST_BLOCK_TIMESTAMP.labels(self.name).set(time.time())
        self.wake.set()

    # ---- one converge step -------------------------------------------------------------

    async def step(self) -> bool:
        """Fetch, then commit one transaction. True when more work is waiting right now.

        During a backfill the next range is fetched while this one is written.
        """
        self.wake.clear()
        head = await self._head()
        cursor = self.state.cursor or self._initial_cursor(head)
        self._gauges(head, cursor.num)
        if cursor.num >= head:
            return False  # nothing new (a head that went backwards is no evidence of a reorg)
        try:
            batch = await self._fetch(cursor, head)
        except errors.ReorgDetected:
            await self._rewind(cursor)
            return True
        if batch.to + 1 <= head - self.window:
            nxt = ledger.Cursor(batch.to, batch.to_hash, batch.head)
            self._ahead = (batch.to, asyncio.create_task(self._fetch_range(nxt, head)))
        try:
            await self._write(batch)
        except BaseException:
            self._drop_ahead()
            raise
        return batch.to < head

    async def _fetch(self, cursor: ledger.Cursor, head: int) -> Batch:
        if self._ahead is not None:
            after, task = self._ahead
            self._ahead = None
            if after == cursor.num:
                return await task
            task.cancel()
        if cursor.num + 1 <= head - self.window:
            return await self._fetch_range(cursor, head)
        return await self._fetch_tip(cursor, head)

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            task = self._ahead[1]
            task.cancel()
            # Retrieve its outcome so a failure there is not reported as unhandled.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._ahead = None

    async def _head(self) -> int:
        """The head block number: pushed by the websocket, else asked of the pool (which
        compares its endpoints' heads and stops trusting a stale or backwards one)."""
        st = self.state
        fresh = time.monotonic() - st.head_seen_at < self.opt.ws_safety_poll
        if self.heads.connected and st.head is not None and fresh and not st.poll_next:
            return st.head
        st.poll_next = False
        head = await self.rpc.head()
        if st.head is None or head != st.head or not self.heads.connected:
            st.head, st.head_seen_at = head, time.monotonic()
            metrics.HEAD_BLOCK.labels(self.name).set(head)
            metrics.LAST_BLOCK_TIMESTAMP.labels(self.name).set(time.time())
        return head

    def _initial_cursor(self, head: int) -> ledger.Cursor:
        start = self.chain.start_block
        if start is None:
            start = max(0, head - self.opt.default_backfill)
        log.info("starting_from", block=start)
        self.state.cursor = ledger.Cursor(start - 1, None, None)  # committed after the 1st step
        return self.state.cursor

    async def header(self, number: int, *, cached: bool = True) -> Header:
        """The header of block ``number`` (from the newHeads cache when allowed)."""
        if cached and (hit := self.state.headers.get(number)) is not None:
            return hit
        got = await self.rpc.request("eth_getBlockByNumber", [hex(number), False])
        return evm_scan.header_or_error(got, str(number), self.rpc.chain)

    def _logs_call(self, where: dict[str, Any]) -> tuple[str, list[Any]]:
        flt = {**where, "address": self.chain.usdc, "topics": [TRANSFER_TOPIC, None, self.topics]}
        return "eth_getLogs", [flt]

    async def _headers(self, numbers: Sequence[int]) -> dict[int, Header]:
        """Headers by number: the websocket's when cached, the rest in one batch."""
        out = {n: h for n in numbers if (h := self.state.headers.get(n)) is not None}
        missing = [n for n in numbers if n not in out]
        got = await self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in missing])
        for n, obj in zip(missing, got, strict=True):
            out[n] = evm_scan.header_or_error(obj, str(n), self.name)
        return out

    async def _fetch_range(self, cursor: ledger.Cursor, head: int) -> Batch:
        """Far below the head: one eth_getLogs over a block range, with the range's end
        headers in the same batch (same endpoint, same view of the chain)."""
        frm = cursor.num + 1
        for _ in range(32):  # each refusal at least halves the range
            to = min(frm + self.range - 1, head - self.window)
            where = {"fromBlock": hex(frm), "toBlock": hex(to)}
            extra = self.outgoing.calls([where])
            calls = [self._logs_call(where), *extra]
            calls += [("eth_getBlockByNumber", [hex(n), False]) for n in sorted({frm, to})]
            try:
                logs, *ends = await self.rpc.batch(calls)
                out_answers, ends = ends[: len(extra)], ends[len(extra) :]
            except errors.RangeTooLarge as exc:
                if to == frm:
                    raise
                self._shrink(exc, to - frm + 1)
                continue
            first = evm_scan.header_or_error(ends[0], str(frm), self.name)
            last = evm_scan.header_or_error(ends[-1], str(to), self.name)
            if cursor.hash is not None and first.parent_hash != cursor.hash:
                raise errors.ReorgDetected(f"block {frm} does not extend {cursor.hash}", block=frm)
            logs = evm_scan.log_list(logs, self.name)
            self._adapt(len(logs), to - frm + 1)
            hashes = {first.number: first.hash, last.number: last.hash}
            transfers = to_transfers(self, logs, frm, to, hashes, {})
            outs = self.outgoing.found(self.name, out_answers, frm, to, hashes)
            headers = [first] if first.number == last.number else [first, last]
            # Every block of a range lies more than the window below the head: confirmed.
            deep = min(to, head - self.chain.confirmations + 1)
            return Batch(frm, to, last.hash, head, headers, transfers, self._seen(), deep, outs)
        raise errors.RpcResponseError(f"{self.name}: eth_getLogs refused every range")

    async def _fetch_tip(self, cursor: ledger.Cursor, head: int) -> Batch:
        """Near the head: block by block, each header linked to the previous one, logs
        asked for by block hash so they belong to exactly the block we checked."""
        frm = cursor.num + 1
        to = min(head, frm + min(self.opt.tip_batch, self.range) - 1)
        by_number = await self._headers(range(frm, to + 1))
        headers = [by_number[n] for n in range(frm, to + 1)]
        prev = cursor.hash
        for h in headers:
            if prev is not None and h.parent_hash != prev:
                if h.number == frm:
                    raise errors.ReorgDetected(f"block {frm} does not extend {prev}", block=frm)
                self.state.headers.clear()  # headers from two branches: ask again
                raise errors.RpcResponseError(f"block {h.number} does not link to {h.number - 1}")
            prev = h.hash
        wanted = [h for h in headers if not h.empty and self._may_match(h)]
        out_at = [
            {"blockHash": h.hash} for h in headers if self.outgoing.may_match(h, self.opt.use_bloom)
        ]
        calls = [self._logs_call({"blockHash": h.hash}) for h in wanted]
        answers = await self.rpc.batch(calls + self.outgoing.calls(out_at))
        out_answers, answers = answers[len(wanted) :], answers[: len(wanted)]
        logs = [lg for answer in answers for lg in evm_scan.log_list(answer, self.name)]
        self._adapt(len(logs), to - frm + 1)
        hashes = {h.number: h.hash for h in headers}
        transfers = to_transfers(self, logs, frm, to, hashes, by_number)
        outs = self.outgoing.found(self.name, out_answers, frm, to, hashes)
        deep = to - self.chain.confirmations + 1  # depth below the last block linked here
        return Batch(frm, to, headers[-1].hash, head, headers, transfers, self._seen(), deep, outs)

    def _may_match(self, h: Header) -> bool:
        return not self.opt.use_bloom or self.bloom.may_match(h.bloom)

    def _seen(self) -> float:
        return self.state.head_seen_at or time.monotonic()

    def _adapt(self, n_logs: int, span: int) -> None:
        if n_logs > self.opt.target_logs:
            self.range = max(1, span * self.opt.target_logs // n_logs)
        elif n_logs < self.opt.target_logs // 2 and span >= self.range:
            self.range = min(self.range_ceiling, self.range * 2)

    def _shrink(self, exc: errors.RangeTooLarge, span: int) -> None:
        if exc.suggested is not None and exc.suggested[1] >= exc.suggested[0]:
            self.range = max(1, min(span - 1, exc.suggested[1] - exc.suggested[0] + 1))
        else:
            self.range = max(1, span // 2)
        self.range_ceiling = min(self.range_ceiling, max(self.range, span - 1))
        log.info("log_range_shrunk", blocks=self.range, error=str(exc)[:200])

    # ---- the transaction -----------------------------------------------------------------

    async def _write(self, batch: Batch) -> None:
        async with self.connection(transaction=True) as conn:
            credited = await evm_scan.commit(conn, self.chain, batch, keep_blocks=2 * self.window)
        self.state.cursor = ledger.Cursor(batch.to, batch.to_hash, batch.head)
        self._gauges(batch.head, batch.to)
        self._report_backfill(batch)
        if credited:
            delay = time.monotonic() - batch.seen_at
            for _ in range(len({r["block_number"] for r in credited})):  # once per block
                metrics.CREDIT_DELAY.labels(self.name).observe(delay)
            log.info("credited", payments=len(credited), cursor=batch.to)

    def _report_backfill(self, batch: Batch) -> None:
        """While beyond the confirmation window: blocks/s, transfers/s and ETA at intervals."""
        if batch.head - batch.to <= self.window:
            if self._backfill is not None:
                self._backfill.advance(batch.to - batch.frm + 1, len(batch.transfers), final=True)
            self._backfill = None  # caught up: the next backfill starts a new report
            return
        if self._backfill is None:
            self._backfill = progress.BackfillProgress(
                self.name, batch.frm, batch.head, interval=self.opt.progress_interval
            )
        self._backfill.target = batch.head  # the head moves on while we catch up
        self._backfill.advance(batch.to - batch.frm + 1, len(batch.transfers))

    @contextlib.asynccontextmanager
    async def connection(self, *, transaction: bool = False) -> AsyncIterator[db.Connection]:
        """A pooled connection (in a transaction when asked); a lost or unreachable database
        becomes ``DatabaseError``, which the loop retries: the step rolled back whole."""
        try:
            async with self.pool.acquire() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn
        except db.TRANSIENT_ERRORS as exc:
            raise errors.DatabaseError(f"{self.name}: database unavailable: {exc!r}") from exc

    async def _load_cursor(self) -> None:
        async with self.connection() as conn:
            self.state.cursor = await ledger.get_cursor(conn, self.name)

    def _gauges(self, head: int, cursor: int) -> None:
        metrics.HEAD_BLOCK.labels(self.name).set(head)
        metrics.CURSOR_BLOCK.labels(self.name).set(cursor)
        metrics.LAG_BLOCKS.labels(self.name).set(max(0, head - cursor))

    async def _rewind(self, cursor: ledger.Cursor) -> None:
        self.state.headers.clear()
        self.state.cursor = await evm_reorg.rewind(self, cursor)
        self.range = self.opt.initial_range


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds * (0.5 + random.random() / 2))
