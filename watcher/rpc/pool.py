"""The pool: picks an endpoint, sends, rotates on transient failure, retries with backoff.

One request is a series of *passes* driven by tenacity. A pass walks the
available endpoints best first (a due half-open probe, then healthy ones in the
configured order, then the rest) and re-sends the same request to the next
endpoint as soon as one fails transiently, so rotation costs no wait. Only
when a whole pass fails does tenacity back off (exponential, jittered), and
when every endpoint is set aside (breaker cooling down, rate limited) it waits
for the earliest to come back, if that is within the request's deadline.
A JSON-RPC error answer, ``RangeTooLarge`` included, is raised at once.

Endpoints whose head lags the best one by more than ``max_head_lag``, or went
backwards, are *demoted*: they serve nothing while a trusted endpoint exists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import httpx
import tenacity

from watcher import errors, settings
from watcher.rpc import send, wire
from watcher.rpc.endpoint import Circuit, Endpoint, EndpointStatus, Policy

T = TypeVar("T")
Op = Callable[[Endpoint, "_Budget"], Awaitable[T]]
HEAD_METHODS = frozenset({"eth_blockNumber", "getSlot"})
DEFAULT_HEAD_LAG = {"evm": 5, "solana": 50}
_MIN_SEND = 0.005  # seconds: less left than this and a send could only time out


@dataclass
class _Budget:
    deadline: float  # monotonic
    passes: int = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


class _Unavailable(errors.RpcError):
    """Every endpoint is set aside for now (breaker open, rate limited, probe in flight)."""

    def __init__(self, message: str, *, ready_in: float) -> None:
        self.ready_in = ready_in
        super().__init__(message)


class RpcPool:
    """Ordered JSON-RPC endpoints for one chain (EVM or Solana)."""

    def __init__(
        self,
        chain: str,
        urls: Sequence[str],
        *,
        chain_id: int | None = None,
        timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        kind: Literal["evm", "solana"] = "evm",
        genesis_hash: str | None = None,
        commitment: str = "finalized",
        policy: Policy | None = None,
        rotate_codes: Collection[int] = (),
    ) -> None:
        if not urls:
            raise errors.RpcError(f"{chain}: no RPC URL configured")
        policy = policy or Policy()
        if timeout is not None:
            policy = replace(policy, timeout=timeout)
        self.chain, self.kind, self.policy = chain, kind, policy
        self.chain_id, self.genesis_hash, self.commitment = chain_id, genesis_hash, commitment
        # JSON-RPC error codes that mean "this endpoint cannot answer now" rather than "no"
        # (Solana -32004/-32005/-32014/-32016: the node is behind): rotated like failures.
        self.rotate_codes = frozenset(rotate_codes)
        self.max_head_lag = (
            policy.max_head_lag if policy.max_head_lag is not None else DEFAULT_HEAD_LAG[kind]
        )
        self.endpoints = [
            Endpoint(chain=chain, url=u, label=label, index=i, policy=policy)
            for i, (u, label) in enumerate(zip(urls, wire.labels(urls), strict=True))
        ]
        self._send = send.Sender(
            chain,
            kind=kind,
            chain_id=chain_id,
            genesis_hash=genesis_hash,
            policy=policy,
            transport=transport,
        )
        self._next_probe = 0.0
        # backoff, 2x, 4x ... capped, plus up to one backoff of jitter so callers spread out.
        self._backoff = tenacity.wait_exponential(
            multiplier=policy.backoff, max=policy.backoff_max
        ) + tenacity.wait_random(0, policy.backoff)

    @classmethod
    def for_chain(
        cls,
        chain: settings.EvmChain | settings.SolanaChain,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: Policy | None = None,
        genesis_hash: str | None = None,
    ) -> RpcPool:
        """The pool for a configured chain: chain id checked (EVM), commitment (Solana)."""
        if isinstance(chain, settings.SolanaChain):
            return cls(
                chain.name,
                chain.rpc_urls,
                kind="solana",
                genesis_hash=genesis_hash,
                commitment=chain.commitment,
                transport=transport,
                policy=policy,
            )
        return cls(
            chain.name, chain.rpc_urls, chain_id=chain.chain_id, transport=transport, policy=policy
        )

    async def aclose(self) -> None:
        await self._send.aclose()

    # ---- public calls ---------------------------------------------------------------

    async def request(
        self, method: str, params: Sequence[Any] | None = None, *, deadline: float | None = None
    ) -> Any:
        """One JSON-RPC call; returns ``result`` or raises an ``errors.RpcError``.

        Transient failures rotate to the next endpoint and back off between
        passes; the whole call takes at most ``deadline`` seconds (the policy's
        by default) before ``NoHealthyEndpoint``.
        """
        args = list(params or [])

        async def op(ep: Endpoint, budget: _Budget) -> Any:
            return await self._send.call(ep, method, args, budget.deadline)

        result, ep = await self._run(method, op, deadline)
        if method in HEAD_METHODS:
            self._observe(ep, method, args, result)
        return result

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, deadline: float | None = None
    ) -> list[Any]:
        """Several calls as JSON-RPC batches on one endpoint; results in call order.

        Any error object in the answer raises its typed error. An endpoint that
        refuses batches (or big ones) gets smaller batches or one call at a time.
        """
        todo = [(m, list(p)) for m, p in calls]
        if not todo:
            return []

        async def op(ep: Endpoint, budget: _Budget) -> list[Any]:
            return await self._send.batch(ep, todo, budget.deadline)

        results, ep = await self._run("batch", op, deadline)
        for (method, params), result in zip(todo, results, strict=True):
            if method in HEAD_METHODS:
                self._observe(ep, method, params, result)
        return results

    async def head(self, *, commitment: str | None = None, deadline: float | None = None) -> int:
        """The best trusted head: EVM ``eth_blockNumber``, Solana ``getSlot`` at ``commitment``.

        The head comes from the endpoint the next requests will prefer, so the
        blocks up to it are there. Every ``head_probe_interval`` all endpoints are
        asked at once to find laggards.
        """
        method, params = self._head_call(commitment)
        live = sum(e.refused is None for e in self.endpoints)
        if live > 1 and time.monotonic() >= self._next_probe:
            heads = await self._probe_round(deadline)
            top = self._preferred()
            if top is not None and top in heads and params == self._head_call(None)[1]:
                return heads[top]  # the round already asked the endpoint we would ask

        async def op(ep: Endpoint, budget: _Budget) -> Any:
            value = await self._send.call(ep, method, params, budget.deadline)
            if wire.as_head(value, method) is None:
                raise errors.RpcTransportError(f"{ep.label}: {method} answered {value!r}")
            return value

        head = 0
        for _ in self.endpoints:  # bounded: each turn can only demote the endpoint asked
            value, ep = await self._run(method, op, deadline)
            head = wire.as_head(value, method) or 0
            self._observe(ep, method, params, value)
            if ep.demoted is None or not self._trusted_viable(time.monotonic()):
                break
        return head

    async def probe_heads(self, *, deadline: float | None = None) -> dict[str, int]:
        """Ask every available endpoint for its head at once; demote laggards. Label -> head."""
        return {ep.label: h for ep, h in (await self._probe_round(deadline)).items()}

    def status(self) -> list[EndpointStatus]:
        """A snapshot per endpoint: health, breaker, refusal, demotion, head, latency p50."""
        now = time.monotonic()
        return [ep.status(now) for ep in self.endpoints]

    # ---- heads ------------------------------------------------------------------------

    async def _probe_round(self, deadline: float | None) -> dict[Endpoint, int]:
        budget = _Budget(time.monotonic() + (deadline or self.policy.deadline))
        method, params = self._head_call(None)
        now = time.monotonic()
        self._next_probe = now + self.policy.head_probe_interval  # one round at a time
        targets = [e for e in self.endpoints if e.available(now)]
        answers = await asyncio.gather(*(self._probe(e, method, params, budget) for e in targets))
        heads = {ep: h for ep, h in zip(targets, answers, strict=True) if h is not None}
        best = max(heads.values(), default=None)
        for ep, value in heads.items():
            ep.note_head(value, time.monotonic())
            self._judge(ep, best)
        return heads

    def _preferred(self) -> Endpoint | None:
        """The endpoint the next request would go to first, if any is free now."""
        try:
            return self._candidates(time.monotonic())[0]
        except errors.RpcError:
            return None

    # ---- passes and retries ---------------------------------------------------------

    async def _run(self, label: str, op: Op[T], deadline: float | None) -> tuple[T, Endpoint]:
        budget = _Budget(time.monotonic() + (deadline or self.policy.deadline))
        try:
            # Fast path: most requests succeed on the first pass; tenacity costs ~60 µs.
            return await self._pass(op, budget)
        except errors.RpcError as exc:
            if not self._retryable(exc):
                raise
            replay: list[errors.RpcError] = [exc]
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(self._retryable),
            wait=self._wait,
            stop=lambda rs: self._stop(rs, budget),
            sleep=asyncio.sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if replay:  # attempt 1 is the fast path's failure: tenacity owns every wait
                        raise replay.pop()
                    answer = await self._pass(op, budget)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            raise self._exhausted(label, last, budget) from last
        return answer

    def _wait(self, rs: tenacity.RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, _Unavailable):
            return exc.ready_in
        return float(self._backoff(rs))

    def _stop(self, rs: tenacity.RetryCallState, budget: _Budget) -> bool:
        if not isinstance(rs.outcome.exception() if rs.outcome else None, _Unavailable):
            budget.passes += 1
        out_of_time = time.monotonic() + rs.upcoming_sleep >= budget.deadline
        return out_of_time or budget.passes >= self.policy.max_attempts

    async def _pass(self, op: Op[T], budget: _Budget) -> tuple[T, Endpoint]:
        """Try each available endpoint once, best first; the first answer wins."""
        last: errors.RpcError | None = None
        for ep in self._candidates(time.monotonic()):
            if budget.remaining() <= _MIN_SEND:
                break
            if not ep.claim(time.monotonic()):
                continue  # another task took its only probe meanwhile
            try:
                await self._send.verify(ep, budget.deadline)
                return await op(ep, budget), ep
            except errors.WrongChain as exc:
                last = exc
            except errors.RpcError as exc:
                if not self._transient(exc):
                    raise
                last = exc
            finally:
                ep.release()  # only acts if a probe ended without an outcome (cancelled)
        if last is not None:
            raise last
        raise _Unavailable("no endpoint free in this pass", ready_in=0.01)

    def _candidates(self, now: float) -> list[Endpoint]:
        """Available endpoints, best first; raises when none is (or ever will be)."""
        live = [e for e in self.endpoints if e.refused is None]
        if not live:
            raise errors.NoHealthyEndpoint(
                f"{self.chain}: every RPC endpoint is refused: "
                + "; ".join(f"{e.label}: {e.refused}" for e in self.endpoints)
            )
        pool = [e for e in live if e.demoted is None] if self._trusted_viable(now) else live
        ready = [e for e in pool if e.available(now)]
        if not ready:
            ready_in = max(0.0, min(e.ready_at(now) for e in pool) - now)
            raise _Unavailable(
                f"every endpoint set aside; earliest back in {ready_in:.3g}s", ready_in=ready_in
            )
        ready.sort(
            key=lambda e: (not e.probe_due(now), e.demoted is not None, not e.well(), e.index)
        )
        return ready

    def _transient(self, exc: errors.RpcError) -> bool:
        """Could another endpoint, or a later try, answer where this one failed?"""
        if wire.is_transient(exc):
            return True
        return (
            isinstance(exc, errors.RpcResponseError)
            and not isinstance(exc, errors.RangeTooLarge)
            and exc.code in self.rotate_codes
        )

    def _retryable(self, exc: BaseException) -> bool:
        # WrongChain: that endpoint is refused now; the next pass says if any other is left.
        if isinstance(exc, _Unavailable | errors.WrongChain):
            return True
        return isinstance(exc, errors.RpcError) and self._transient(exc)

    def _trusted_viable(self, now: float) -> bool:
        """Is there an endpoint that is not demoted and whose breaker lets requests in?"""
        return any(
            e.refused is None
            and e.demoted is None
            and (e.circuit is Circuit.CLOSED or e.probe_due(now))
            for e in self.endpoints
        )

    def _exhausted(
        self, label: str, last: BaseException | None, budget: _Budget
    ) -> errors.NoHealthyEndpoint:
        now = time.monotonic()
        parts = [ep.describe(now) for ep in self.endpoints]
        return errors.NoHealthyEndpoint(
            f"{self.chain}: no RPC endpoint answered {label} after {budget.passes} pass(es): "
            f"{'; '.join(parts)}; last error: {last}"
        )

    def _head_call(self, commitment: str | None) -> tuple[str, list[Any]]:
        if self.kind == "evm":
            return "eth_blockNumber", []
        return "getSlot", [{"commitment": commitment or self.commitment}]

    async def _probe(
        self, ep: Endpoint, method: str, params: list[Any], budget: _Budget
    ) -> int | None:
        """One endpoint's head for a probe round; None when it cannot tell."""
        if not ep.claim(time.monotonic()):
            return None
        try:
            await self._send.verify(ep, budget.deadline)
            value = wire.as_head(await self._send.call(ep, method, params, budget.deadline), method)
            if self.kind == "solana":
                await self._solana_health(ep, budget)
            return value
        except errors.RpcError:
            return None  # already accounted; a probe never fails the caller
        finally:
            ep.release()

    async def _solana_health(self, ep: Endpoint, budget: _Budget) -> None:
        try:
            await self._send.call(ep, "getHealth", [], budget.deadline)
        except errors.RpcResponseError as exc:
            ep.sick = f"getHealth: {exc}"
        except errors.RpcTransportError as exc:  # "node is behind" is classified transient
            ep.sick = f"getHealth: {exc}"
        else:
            ep.sick = None

    def _observe(self, ep: Endpoint, method: str, params: list[Any], result: Any) -> None:
        """Record a head passing through; ``getSlot`` only at the pool's own commitment."""
        if method == "getSlot":
            opts = params[0] if params and isinstance(params[0], dict) else {}
            if opts.get("commitment", "finalized") != self.commitment:
                return
        head = wire.as_head(result, method)
        if head is None:
            return
        ep.note_head(head, time.monotonic())
        others = [
            e.head
            for e in self.endpoints
            if e is not ep and e.refused is None and e.head is not None
        ]
        self._judge(ep, max(others, default=None))

    def _judge(self, ep: Endpoint, best: int | None) -> None:
        """Demote ``ep`` if its last head went backwards or lags ``best``; else trust it."""
        assert ep.head is not None and ep.max_head is not None
        if ep.head < ep.max_head:
            ep.demote(f"head went backwards to {ep.head} after {ep.max_head}")
        elif best is not None and best - ep.head > self.max_head_lag:
            ep.demote(f"head {ep.head} is {best - ep.head} behind the best endpoint ({best})")
        elif ep.sick is not None:
            ep.demote(ep.sick)
        else:
            ep.promote()
