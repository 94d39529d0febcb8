"""A loopback JSON-RPC proxy (HTTP and websocket) in front of anvil that misbehaves on demand.

Faults (set the attributes while it runs):

* ``fault``: every HTTP request answers ``"429"`` (with Retry-After), ``"500"``,
  ``"timeout"`` (holds the request past the client's timeout), ``"garbage"``
  (200 with a body that is not JSON), or None for healthy. ``fault_rate``
  applies it to that fraction of requests only (random, seeded).
* ``head_lag``: report a head this many blocks old (``eth_blockNumber`` and
  ``eth_getBlockByNumber("latest")``): a stale node. Raise and lower it to make
  the head go backwards.
* ``max_log_span``: refuse ``eth_getLogs`` over more blocks than this, the
  way providers do ("query returned more than 10000 results", code -32005,
  with a suggested range), in single calls and in batches.
* ``drop_websockets()`` closes every subscriber's socket; ``refuse_websockets``
  turns new ones away.
* ``intercept``: an async function given each single JSON-RPC call (and the
  proxy); what it returns (a Response) is answered instead, None lets the call
  through. For faults no flag covers: lying, swallowing, answering twice.

It is real HTTP on a real socket (uvicorn + starlette) so the watcher's own
client, timeouts and reconnect logic are what get exercised.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from devkit.anvil import free_port


class FaultProxy:
    def __init__(self, upstream_http: str, upstream_ws: str, *, seed: int = 7) -> None:
        self.upstream_http = upstream_http
        self.upstream_ws = upstream_ws
        self.fault: str | None = None
        self.fault_rate = 1.0
        self.timeout_seconds = 3.0
        self.head_lag = 0
        self.max_log_span: int | None = None
        self.range_refusals = 0
        self.refuse_websockets = False
        self.intercept: Callable[[dict[str, Any], FaultProxy], Awaitable[Response | None]] | None
        self.intercept = None
        self.requests: collections.Counter[str] = collections.Counter()
        self.faults_served = 0
        self.port = free_port()
        self._rng = random.Random(seed)
        self._sockets: set[WebSocket] = set()
        self._client = httpx.AsyncClient(timeout=30)
        app = Starlette(
            routes=[
                Route("/", self._http, methods=["POST"]),
                WebSocketRoute("/", self._ws),
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                return self
            await asyncio.sleep(0.02)
        raise TimeoutError("fault proxy did not start")

    async def stop(self) -> None:
        await self.drop_websockets()
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)
        await self._client.aclose()

    async def drop_websockets(self) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
        self._sockets.clear()

    # ---- HTTP ----------------------------------------------------------------------------

    async def _http(self, request: Request) -> Response:
        body = await request.body()
        try:
            call = json.loads(body)
        except ValueError:
            call = {}
        method = str(call.get("method")) if isinstance(call, dict) else "batch"
        self.requests[method] += 1
        if self.fault is not None and self._rng.random() < self.fault_rate:
            self.faults_served += 1
            return await self._faulty(self.fault)
        if self.intercept is not None and isinstance(call, dict):
            replaced = await self.intercept(call, self)
            if replaced is not None:
                return replaced
        if self.head_lag and method in ("eth_blockNumber", "eth_getBlockByNumber"):
            return Response(json.dumps(await self._stale(call)), media_type="application/json")
        upstream = await self._client.post(
            self.upstream_http, content=body, headers={"content-type": "application/json"}
        )
        if self.max_log_span is not None and b"eth_getLogs" in body:
            answer = self._refuse_wide_ranges(call, upstream.json())
            return Response(json.dumps(answer), media_type="application/json")
        return Response(upstream.content, upstream.status_code, media_type="application/json")

    def _refuse_wide_ranges(self, call: Any, answer: Any) -> Any:
        calls = call if isinstance(call, list) else [call]
        answers = answer if isinstance(answer, list) else [answer]
        by_id = {a.get("id"): a for a in answers}
        for c in calls:
            flt = (c.get("params") or [{}])[0] if c.get("method") == "eth_getLogs" else {}
            if "fromBlock" not in flt or "toBlock" not in flt:
                continue
            frm, to = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            span = self.max_log_span or 1
            if to - frm + 1 > span:
                self.range_refusals += 1
                by_id[c.get("id")] = {
                    "jsonrpc": "2.0",
                    "id": c.get("id"),
                    "error": {
                        "code": -32005,
                        "message": "query returned more than 10000 results. Try with this "
                        f"block range [{hex(frm)}, {hex(frm + span - 1)}].",
                    },
                }
        out = [by_id[c.get("id")] for c in calls]
        return out if isinstance(call, list) else out[0]

    async def _faulty(self, fault: str) -> Response:
        if fault == "429":
            return Response('{"error":"slow down"}', 429, headers={"retry-after": "0"})
        if fault == "500":
            return Response("internal error", 500)
        if fault == "timeout":
            await asyncio.sleep(self.timeout_seconds)
            return Response("too late", 504)
        return Response('{"jsonrpc": "2.0", "result": [unterminated', 200)

    async def _stale(self, call: dict[str, Any]) -> dict[str, Any]:
        head = int((await self._upstream("eth_blockNumber", []))["result"], 16)
        old = max(0, head - self.head_lag)
        if call["method"] == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call.get("id"), "result": hex(old)}
        params = list(call.get("params") or [])
        if params and params[0] == "latest":
            params[0] = hex(old)
        answer = await self._upstream("eth_getBlockByNumber", params)
        return {**answer, "id": call.get("id")}

    async def forward(self, call: dict[str, Any]) -> dict[str, Any]:
        """Send one call upstream as is; its JSON answer (for an ``intercept``)."""
        data: dict[str, Any] = (await self._client.post(self.upstream_http, json=call)).json()
        return data

    async def _upstream(self, method: str, params: list[Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        data: dict[str, Any] = (await self._client.post(self.upstream_http, json=body)).json()
        return data

    # ---- websocket -----------------------------------------------------------------------

    async def _ws(self, ws: WebSocket) -> None:
        if self.refuse_websockets:
            await ws.close(code=1013)
            return
        await ws.accept()
        self._sockets.add(ws)
        try:
            async with websockets.connect(self.upstream_ws) as up:
                down = asyncio.create_task(self._pump_down(up, ws))
                try:
                    while True:
                        await up.send(await ws.receive_text())
                finally:
                    down.cancel()
                    await asyncio.gather(down, return_exceptions=True)
        except (WebSocketDisconnect, websockets.WebSocketException, RuntimeError, OSError):
            pass
        finally:
            self._sockets.discard(ws)

    async def _pump_down(self, up: websockets.ClientConnection, ws: WebSocket) -> None:
        with contextlib.suppress(websockets.WebSocketException, RuntimeError, OSError):
            async for message in up:
                await ws.send_text(message if isinstance(message, str) else message.decode())
