"""JSON-RPC endpoint pool shared by the followers: ordered fallbacks, typed errors.

``RpcPool(chain, urls)`` sends each request to the best endpoint and, when that
endpoint fails in a way another one could fix (unreachable, timeout, HTTP 5xx,
429, unreadable answer), rotates to the next without losing the request. A
JSON-RPC error object is the node's answer and is raised, not retried
elsewhere. All failures leave as ``errors.RpcError`` subclasses; httpx never
escapes this module.

The transport is the test seam: pass an ``httpx.AsyncBaseTransport`` (for
example ``httpx.MockTransport``) to inject faults.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from watcher import errors, metrics
from watcher.settings import redact_url

log = structlog.get_logger(__name__)

# Messages providers use when an eth_getLogs range or result set is too large.
_RANGE_PATTERNS = re.compile(
    r"(query returned more than \d+ results|block range is too (large|wide)|"
    r"range (is )?too large|exceed(s|ed)? (the )?(max(imum)?|limit)|response size|"
    r"limit exceeded|too many (results|logs|blocks))",
    re.IGNORECASE,
)
_SUGGESTED_RANGE = re.compile(r"\[(0x[0-9a-fA-F]+),\s*(0x[0-9a-fA-F]+)\]")
RANGE_ERROR_CODES = {-32005, -32602, -32614}


def classify_rpc_error(
    method: str, code: int | None, message: str, endpoint: str
) -> errors.RpcError:
    """Turn a JSON-RPC error object into our exception (range refusals get their own type)."""
    if method == "eth_getLogs" and (code == -32005 or _RANGE_PATTERNS.search(message)):
        m = _SUGGESTED_RANGE.search(message)
        suggested = (int(m.group(1), 16), int(m.group(2), 16)) if m else None
        return errors.RangeTooLarge(message, endpoint=endpoint, code=code, suggested=suggested)
    if code == 429 or (code == -32005 and "rate" in message.lower()):
        return errors.RpcRateLimited(message, endpoint=endpoint)
    return errors.RpcResponseError(message, endpoint=endpoint, code=code)


@dataclass
class Endpoint:
    url: str
    label: str
    verified: bool = False  # chain id checked
    refused: str | None = None  # permanent: wrong chain
    failures: int = 0
    last_error_at: float = 0.0
    latencies: list[float] = field(default_factory=list)


class RpcPool:
    """Ordered JSON-RPC endpoints for one chain."""

    def __init__(
        self,
        chain: str,
        urls: Sequence[str],
        *,
        chain_id: int | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rotate_codes: Collection[int] = (),
    ) -> None:
        if not urls:
            raise errors.RpcError(f"{chain}: no RPC URL configured")
        self.chain = chain
        self.chain_id = chain_id
        self.endpoints = [Endpoint(url=u, label=redact_url(u)) for u in urls]
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"user-agent": "usdc-watcher"},
        )
        self._ids = itertools.count(1)
        # JSON-RPC error codes that say "this endpoint cannot answer now" rather than "no":
        # e.g. Solana's -32005 node unhealthy / behind. They rotate to the next endpoint.
        self.rotate_codes = frozenset(rotate_codes)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _candidates(self) -> list[Endpoint]:
        usable = [e for e in self.endpoints if e.refused is None]
        # Healthy ones in configured order first, then the recently failing ones.
        return sorted(usable, key=lambda e: e.failures > 0)

    async def request(self, method: str, params: Sequence[Any] | None = None) -> Any:
        """One JSON-RPC call; returns ``result`` or raises an ``errors.RpcError``."""
        last: errors.RpcError | None = None
        for ep in self._candidates():
            try:
                await self._verify(ep)
                result = await self._call(ep, method, list(params or []))
            except (errors.RpcTransportError, errors.RpcRateLimited, errors.WrongChain) as exc:
                last = exc
                continue
            except errors.RpcResponseError as exc:
                if exc.code is None or exc.code not in self.rotate_codes:
                    raise
                last = exc
                continue
            ep.failures = 0
            return result
        raise errors.NoHealthyEndpoint(
            f"{self.chain}: every endpoint failed for {method}: {last}"
        ) from last

    async def _verify(self, ep: Endpoint) -> None:
        if ep.verified or self.chain_id is None:
            return
        got = int(await self._call(ep, "eth_chainId", []), 16)
        if got != self.chain_id:
            ep.refused = f"chain id {got}, expected {self.chain_id}"
            metrics.RPC_HEALTHY.labels(self.chain, ep.label).set(0)
            log.error(
                "rpc_endpoint_refused", chain=self.chain, endpoint=ep.label, reason=ep.refused
            )
            raise errors.WrongChain(f"{ep.label}: {ep.refused}", endpoint=ep.label)
        ep.verified = True
        metrics.RPC_HEALTHY.labels(self.chain, ep.label).set(1)

    async def _call(self, ep: Endpoint, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        started = time.monotonic()
        outcome = "transport"
        try:
            try:
                resp = await self._client.post(ep.url, json=body)
            except httpx.TimeoutException as exc:
                outcome = "timeout"
                raise errors.RpcTransportError(f"{ep.label}: timeout", endpoint=ep.label) from exc
            except httpx.HTTPError as exc:
                raise errors.RpcTransportError(f"{ep.label}: {exc!r}", endpoint=ep.label) from exc
            if resp.status_code == 429:
                outcome = "rate_limited"
                raise errors.RpcRateLimited(
                    f"{ep.label}: HTTP 429",
                    endpoint=ep.label,
                    retry_after=_retry_after(resp.headers.get("retry-after")),
                )
            if resp.status_code == 413 and method == "eth_getLogs":
                outcome = "rpc_error"
                raise errors.RangeTooLarge(f"{ep.label}: HTTP 413", endpoint=ep.label, code=413)
            if resp.status_code >= 400:
                raise errors.RpcTransportError(
                    f"{ep.label}: HTTP {resp.status_code}", endpoint=ep.label
                )
            try:
                data = resp.json()
            except ValueError as exc:
                raise errors.RpcTransportError(
                    f"{ep.label}: answer is not JSON", endpoint=ep.label
                ) from exc
            if not isinstance(data, dict) or ("result" not in data and "error" not in data):
                raise errors.RpcTransportError(
                    f"{ep.label}: not a JSON-RPC answer", endpoint=ep.label
                )
            if data.get("error") is not None:
                err = data["error"] if isinstance(data["error"], dict) else {}
                code = err.get("code") if isinstance(err.get("code"), int) else None
                message = str(err.get("message", data["error"]))
                outcome = "rpc_error"
                raise classify_rpc_error(method, code, message, ep.label)
            outcome = "ok"
            return data["result"]
        finally:
            elapsed = time.monotonic() - started
            metrics.RPC_REQUESTS.labels(self.chain, ep.label, method, outcome).inc()
            metrics.RPC_LATENCY.labels(self.chain, ep.label).observe(elapsed)
            if outcome in ("transport", "timeout", "rate_limited"):
                ep.failures += 1
                ep.last_error_at = time.monotonic()
                log.warning(
                    "rpc_failure",
                    chain=self.chain,
                    endpoint=ep.label,
                    method=method,
                    outcome=outcome,
                )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
