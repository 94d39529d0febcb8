"""Heads across a pool's endpoints: who is behind, who went backwards, who is sick.

Heads arrive two ways: answers passing through the pool (``eth_blockNumber``,
``eth_getBlockByNumber("latest")``, ``getSlot`` at the pool's commitment) and
probe rounds that ask every available endpoint at once. An endpoint is
*demoted* when its head went backwards (below the best it reported before),
lags the best head by more than ``max_lag``, or (Solana) ``getHealth``
complains; it is trusted again once none of that holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any, Literal

import structlog

from watcher import errors
from watcher.rpc import send, wire
from watcher.rpc.endpoint import Endpoint, Policy

log = structlog.get_logger("watcher.rpc")


class Heads:
    """Head bookkeeping and probe rounds for one pool."""

    def __init__(
        self,
        chain: str,
        endpoints: Sequence[Endpoint],
        sender: send.Sender,
        *,
        kind: Literal["evm", "solana"],
        commitment: str,
        max_lag: int,
        policy: Policy,
    ) -> None:
        self.chain, self.endpoints, self._send = chain, endpoints, sender
        self.kind, self.commitment, self.max_lag, self.policy = kind, commitment, max_lag, policy
        self._next_probe = 0.0
        self._task: asyncio.Task[dict[Endpoint, int]] | None = None

    def call(self, commitment: str | None = None) -> tuple[str, list[Any]]:
        """The JSON-RPC call that reads a head on this kind of chain."""
        if self.kind == "evm":
            return "eth_blockNumber", []
        return "getSlot", [{"commitment": commitment or self.commitment}]

    def probe_due(self) -> bool:
        live = sum(e.refused is None for e in self.endpoints)
        return live > 1 and time.monotonic() >= self._next_probe

    async def probe_round(self, deadline: float) -> dict[Endpoint, int]:
        """Ask every available endpoint for its head at once (by ``deadline``); judge all."""
        method, params = self.call()
        now = time.monotonic()
        self._next_probe = now + self.policy.head_probe_interval  # one round at a time
        targets = [e for e in self.endpoints if e.available(now)]
        answers = await asyncio.gather(*(self._probe(e, method, params, deadline) for e in targets))
        heads = {ep: h for ep, h in zip(targets, answers, strict=True) if h is not None}
        best = max(heads.values(), default=None)
        for ep, value in heads.items():
            # A head that passed through a request while we waited is newer than ours: an
            # old answer must not overwrite it (and re-trust a node that went backwards).
            if ep.head_at <= now:
                ep.note_head(value, time.monotonic())
            self.judge(ep, best)
        return heads

    def observe(self, ep: Endpoint, method: str, params: Sequence[Any], result: Any) -> None:
        """Record a head passing through the pool; judge it against the heads seen elsewhere."""
        head = wire.passing_head(method, params, result, kind=self.kind, commitment=self.commitment)
        if head is None:
            return
        ep.note_head(head, time.monotonic())
        others = [
            e.head
            for e in self.endpoints
            if e is not ep and e.refused is None and e.head is not None
        ]
        self.judge(ep, max(others, default=None))
        self._probe_soon()

    def judge(self, ep: Endpoint, best: int | None) -> None:
        """Demote ``ep`` if its last head went backwards or lags ``best``; else trust it."""
        assert ep.head is not None and ep.max_head is not None
        if ep.head < ep.max_head:
            ep.demote(f"head went backwards to {ep.head} after {ep.max_head}")
        elif best is not None and best - ep.head > self.max_lag:
            ep.demote(f"head {ep.head} is {best - ep.head} behind the best endpoint ({best})")
        elif ep.sick is not None:
            ep.demote(ep.sick)
        else:
            ep.promote()

    async def aclose(self) -> None:
        """Stop a background probe round."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe(
        self, ep: Endpoint, method: str, params: list[Any], deadline: float
    ) -> int | None:
        """One endpoint's head for a probe round; None when it cannot tell."""
        if not ep.claim(time.monotonic()):
            return None
        try:
            await self._send.verify(ep, deadline)
            value = wire.as_head(await self._send.call(ep, method, params, deadline), method)
            if self.kind == "solana":
                await self._solana_health(ep, deadline)
            return value
        except errors.RpcError:
            return None  # already accounted; a probe never fails the caller
        finally:
            ep.release()

    async def _solana_health(self, ep: Endpoint, deadline: float) -> None:
        try:
            await self._send.call(ep, "getHealth", [], deadline)
        except (errors.RpcResponseError, errors.RpcTransportError) as exc:
            ep.sick = f"getHealth: {exc}"  # "node is behind" arrives either way
        else:
            ep.sick = None

    def _probe_soon(self) -> None:
        """Followers ask one endpoint for heads; look at the others in the background."""
        busy = self._task is not None and not self._task.done()
        if not busy and self.probe_due():
            deadline = time.monotonic() + self.policy.deadline
            self._task = asyncio.create_task(
                self.probe_round(deadline), name=f"rpc-probe-{self.chain}"
            )
            self._task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[dict[Endpoint, int]]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("rpc_head_probe_failed", chain=self.chain, error=repr(task.exception()))
