"""One exchange with one endpoint: HTTP, timeout, accounting, chain identity, batches.

Every exchange ends in exactly one outcome that feeds the endpoint's health,
its breaker and the metrics (``watcher_rpc_requests_total`` by method and
outcome, ``watcher_rpc_request_duration_seconds``). httpx exceptions are
translated here, with the URL (which carries API keys) replaced by its label.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx

from watcher import errors, metrics
from watcher.rpc import wire
from watcher.rpc.endpoint import Endpoint, Policy

Call = tuple[str, list[Any]]


class Sender:
    """The HTTP client shared by a pool's endpoints, and the chain identity checks."""

    def __init__(
        self,
        chain: str,
        *,
        kind: Literal["evm", "solana"],
        chain_id: int | None,
        genesis_hash: str | None,
        policy: Policy,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.chain, self.kind, self.policy = chain, kind, policy
        self.chain_id, self.genesis_hash = chain_id, genesis_hash
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(policy.timeout),
            transport=transport,
            headers={"user-agent": "usdc-watcher"},
        )
        self._ids = itertools.count(1)
        self._locks: dict[int, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, ep: Endpoint, method: str, params: list[Any], deadline: float) -> Any:
        """One call on ``ep``; the typed error of its failure."""
        req_id = next(self._ids)
        payload = wire.body(req_id, method, params)
        return await self._exchange(
            ep, method, payload, deadline, lambda r: wire.decode(r, method, req_id, ep.label)
        )

    async def batch(self, ep: Endpoint, calls: Sequence[Call], deadline: float) -> list[Any]:
        """``calls`` on ``ep`` in batches as large as it accepts (learned per endpoint)."""
        out: list[Any] = []
        while len(out) < len(calls):
            limit = ep.batch_limit or self.policy.max_batch  # may shrink as we go
            if limit <= 1 or len(calls) - len(out) == 1:
                rest = calls[len(out) :]
                out.extend([await self.call(ep, m, p, deadline) for m, p in rest])
                break
            chunk = calls[len(out) : len(out) + limit]
            try:
                out.extend(await self._batch_once(ep, chunk, deadline))
            except wire.BatchRejected as exc:
                # Bounded: the limit halves (or drops to 1) on every refusal.
                ep.batch_limit = max(1, len(chunk) // 2) if exc.too_large else 1
                ep.log.warning("rpc_batch_refused", size=len(chunk), now_limit=ep.batch_limit)
                out.extend(await self.batch(ep, chunk, deadline))
        return out

    async def _batch_once(self, ep: Endpoint, chunk: Sequence[Call], deadline: float) -> list[Any]:
        ids = [next(self._ids) for _ in chunk]
        payload = [wire.body(i, m, p) for i, (m, p) in zip(ids, chunk, strict=True)]
        methods = {i: m for i, (m, _) in zip(ids, chunk, strict=True)}
        names = set(methods.values())
        label = names.pop() if len(names) == 1 else "batch"
        result: list[Any] = await self._exchange(
            ep, label, payload, deadline, lambda r: wire.decode_batch(r, methods, ids, ep.label)
        )
        return result

    async def verify(self, ep: Endpoint, deadline: float) -> None:
        """On first use: the endpoint must serve our chain, else it is refused for good."""
        if ep.verified:
            return
        async with self._locks.setdefault(ep.index, asyncio.Lock()):
            if ep.verified:
                return
            if ep.refused is not None:
                raise errors.WrongChain(f"{ep.label}: {ep.refused}", endpoint=ep.label)
            expected = self.chain_id if self.kind == "evm" else self.genesis_hash
            if expected is None:
                ep.verified = True  # nothing configured to compare with
                return
            method = "eth_chainId" if self.kind == "evm" else "getGenesisHash"
            what = "chain id" if self.kind == "evm" else "genesis hash"
            try:
                got: object = await self.call(ep, method, [], deadline)
                reason = f"{what} {_hex_int(got) if self.kind == 'evm' else got}"
            except errors.RpcResponseError as exc:  # cannot tell its chain: not trusted
                got, reason = None, f"{what} unknown ({method} answered: {exc})"
            if self.kind == "evm" and isinstance(got, str):
                got = _hex_int(got)
            if got != expected:
                ep.refuse(f"{reason}, expected {expected}")
                metrics.RPC_REQUESTS.labels(self.chain, ep.label, method, "refused").inc()
                raise errors.WrongChain(f"{ep.label}: {ep.refused}", endpoint=ep.label)
            ep.verified = True

    async def _exchange(
        self,
        ep: Endpoint,
        method: str,
        payload: object,
        deadline: float,
        decode: Callable[[httpx.Response], Any],
    ) -> Any:
        started = time.monotonic()
        limit = min(self.policy.timeout, deadline - started)
        try:
            resp = await self._post(ep, payload, limit)
            result = decode(resp)
        except errors.RpcError as exc:
            # A timeout cut short by the caller's deadline says nothing about the endpoint.
            blameless = isinstance(exc, wire.Timeout) and limit < self.policy.timeout
            self._account(ep, method, exc, time.monotonic() - started, blame=not blameless)
            raise
        self._account(ep, method, None, time.monotonic() - started)
        return result

    async def _post(self, ep: Endpoint, payload: object, limit: float) -> httpx.Response:
        limit = max(limit, 0.001)
        try:
            # httpx times each phase; asyncio.timeout bounds the whole exchange.
            async with asyncio.timeout(limit):
                return await self._client.post(ep.url, json=payload, timeout=limit)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise wire.Timeout(
                f"{ep.label}: no answer within {limit:.3g}s", endpoint=ep.label
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            text = str(exc).replace(ep.url, ep.label) or type(exc).__name__
            raise errors.RpcTransportError(f"{ep.label}: {text}", endpoint=ep.label) from exc

    def _account(
        self,
        ep: Endpoint,
        method: str,
        exc: errors.RpcError | None,
        took: float,
        *,
        blame: bool = True,
    ) -> None:
        outcome = wire.outcome_of(exc)
        metrics.RPC_REQUESTS.labels(self.chain, ep.label, method, outcome).inc()
        metrics.RPC_LATENCY.labels(self.chain, ep.label).observe(took)
        now = time.monotonic()
        if not blame:
            ep.release()  # a probe cut short proves nothing: let the next one go
        elif exc is None or outcome == "rpc_error":
            ep.succeeded(took, now)
        elif isinstance(exc, errors.RpcRateLimited):
            ep.rate_limited(exc.retry_after, took, now)
        else:
            ep.failed(took, now, str(exc))
            ep.log.warning("rpc_failure", method=method, outcome=outcome, error=str(exc))


def _hex_int(value: object) -> object:
    try:
        return int(value, 16) if isinstance(value, str) else value
    except ValueError:
        return value
