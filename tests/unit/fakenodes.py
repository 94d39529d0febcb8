"""Scripted JSON-RPC nodes behind ``httpx.MockTransport``: the RPC pool's test seam.

Each node is reached by its host name (``http://a/...``). It answers the few
methods the pool needs from its own state (chain id, head, genesis hash) and
echoes anything else; a ``fault`` callable can replace its answer to inject
HTTP errors, timeouts, garbage or error objects. Every request is logged at the
transport so tests count what really went over the wire.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Fault = Callable[[Any], "httpx.Response | Awaitable[httpx.Response] | None"]


@dataclass
class Node:
    chain_id: int = 8453
    head: int = 100
    genesis: str = "GENESIS-A"
    healthy: bool = True
    batches: bool = True  # False: refuse every JSON-RPC batch with -32600
    max_batch: int | None = None  # refuse larger batches as "too large"
    reverse_batches: bool = False  # answer batch items in reverse order
    fault: Fault | None = None
    received: list[str] = field(default_factory=list)  # methods; "batch[n]" for batches
    params: list[Any] = field(default_factory=list)

    def methods(self, name: str) -> int:
        return sum(m == name for m in self.received)

    def result(self, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return hex(self.chain_id)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "getSlot":
            return self.head
        if method == "getGenesisHash":
            return self.genesis
        if method == "getHealth":
            return "ok"
        return {"method": method, "params": params}

    def answer(self, item: dict[str, Any]) -> dict[str, Any]:
        method, params = item["method"], item.get("params", [])
        if method == "getHealth" and not self.healthy:
            error = {"code": -32005, "message": "Node is behind by 500 slots"}
            return {"jsonrpc": "2.0", "id": item["id"], "error": error}
        return {"jsonrpc": "2.0", "id": item["id"], "result": self.result(method, params)}


def ok(body: Any, result: Any) -> httpx.Response:
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})


def error(body: Any, code: int, message: str, data: Any = None) -> httpx.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": err})


class Network:
    """Hosts -> nodes; ``transport`` goes into ``RpcPool(..., transport=...)``."""

    def __init__(self, **nodes: Node) -> None:
        self.nodes = nodes
        self.transport = httpx.MockTransport(self._handle)

    def __getitem__(self, host: str) -> Node:
        return self.nodes[host]

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        node = self.nodes[request.url.host]
        body = json.loads(request.content)
        if isinstance(body, list):
            node.received.append(f"batch[{len(body)}]")
        else:
            node.received.append(body["method"])
            node.params.append(body.get("params"))
        if node.fault is not None:
            out = node.fault(body)
            if isinstance(out, Awaitable):
                out = await out
            if out is not None:
                return out
        if isinstance(body, list):
            return self._batch(node, body)
        return httpx.Response(200, json=node.answer(body))

    @staticmethod
    def _batch(node: Node, body: list[dict[str, Any]]) -> httpx.Response:
        if not node.batches:
            refusal = {"code": -32600, "message": "batch requests are not supported"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": refusal})
        if node.max_batch is not None and len(body) > node.max_batch:
            refusal = {"code": -32600, "message": f"batch too large (max {node.max_batch})"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": refusal})
        items = [node.answer(item) for item in body]
        return httpx.Response(200, json=items[::-1] if node.reverse_batches else items)


async def hang(_body: Any) -> httpx.Response:
    """A node that accepts the request and never answers (the pool's timeout ends it)."""
    await asyncio.sleep(3600)
    raise AssertionError("unreachable: the pool times out first")


def refuse_connection(_body: Any) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused")


def http_status(status: int, headers: dict[str, str] | None = None) -> Fault:
    return lambda _body: httpx.Response(status, headers=headers, text="upstream trouble")


def garbage(_body: Any) -> httpx.Response:
    return httpx.Response(200, text="<html>502 Bad Gateway</html>")


def once(fault: Fault) -> Fault:
    """``fault`` for the first request only; normal answers afterwards."""
    used: list[bool] = []

    def first(body: Any) -> httpx.Response | Awaitable[httpx.Response] | None:
        if used:
            return None
        used.append(True)
        return fault(body)

    return first
