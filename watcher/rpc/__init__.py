"""JSON-RPC endpoint pool shared by the followers: health, breakers, rotation, typed errors.

``RpcPool(chain, urls)`` sends each request to the best endpoint and, when
that endpoint fails in a way another one could fix, re-sends the same request
to the next one. Failures leave as ``errors.RpcError`` subclasses; httpx never
escapes this package::

    RpcError
    ├── RpcTransportError   unreachable, timeout, HTTP 5xx, garbage   (retried, rotated)
    ├── RpcRateLimited      HTTP 429 / rate-limit error object        (retried, rotated)
    ├── RpcResponseError    the node's JSON-RPC error answer          (raised at once)
    │   └── RangeTooLarge   eth_getLogs range refusal                 (raised at once)
    ├── WrongChain          chain id / genesis mismatch: endpoint refused for good
    └── NoHealthyEndpoint   nothing answered within the request's deadline

Modules: ``wire`` (bodies and answers, no I/O), ``endpoint`` (per-endpoint
bookkeeping, no I/O), ``send`` (one exchange with one endpoint), ``heads``
(lag and backwards detection, probe rounds), ``pool`` (passes, retries,
rotation). ``docs/rpc.md`` describes the behaviour for operators.
"""

from __future__ import annotations

from watcher.rpc.endpoint import Circuit, Endpoint, EndpointStatus, Policy
from watcher.rpc.pool import RpcPool
from watcher.rpc.wire import RANGE_ERROR_CODES, abi_uint, classify_rpc_error

__all__ = [
    "RANGE_ERROR_CODES",
    "Circuit",
    "Endpoint",
    "EndpointStatus",
    "Policy",
    "RpcPool",
    "abi_uint",
    "classify_rpc_error",
]
