"""HTTP and websocket front ends of the local node, with fault switches.

One :class:`SolanaNode` owns a :class:`chain.Chain`; it serves it through one
or more :class:`Endpoint` s (HTTP JSON-RPC on one port, the pubsub websocket on
another, like a validator's 8899/8900), all bound to 127.0.0.1 on free ports.
Each endpoint has its own :class:`Faults`, so a test can break the primary
and keep a fallback healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve

from devkit.solana_node import chain, render, rpc
from watcher import networks

HOST = "127.0.0.1"


MAINNET_GENESIS = networks.get("solana").genesis_hash or ""


@dataclass
class Faults:
    """Switches a test flips; every request consults them."""

    fail_next: int = 0  # the next N requests fail ...
    fail_mode: str = "http500"  # ... as "http500", "rpc_error" or "reset" (connection cut)
    fail_methods: set[str] = field(default_factory=set)  # these methods always fail (rpc error)
    down: bool = False  # every HTTP request gets 503
    delay: float = 0.0  # seconds added before every answer
    ws_refuse: bool = False  # refuse new websocket connections
    fail_after: int | None = None  # once this many requests were served, fail every request
    requests: int = 0  # counter, for tests that want to see traffic
    calls: Counter[str] = field(default_factory=Counter)  # JSON-RPC calls by method

    def take(self, method: str | None) -> str | None:
        """The failure to apply to this request, if any."""
        if self.down or (self.fail_after is not None and self.requests > self.fail_after):
            return "http503"
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_mode
        if method in self.fail_methods:
            return "rpc_error"
        return None


_HTTP_STATUS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Endpoint:
    """One HTTP + websocket front end."""

    def __init__(self, node: SolanaNode) -> None:
        self.node = node
        self.faults = Faults()
        self._http: asyncio.Server | None = None
        self._ws: Server | None = None
        self._conns: set[ServerConnection] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.url = ""
        self.ws_url = ""

    async def start(self, port: int = 0, ws_port: int = 0) -> None:
        self._http = await asyncio.start_server(self._http_conn, HOST, port)
        self._ws = await serve(self._ws_conn, HOST, ws_port, max_size=2**24)
        http_port = self._http.sockets[0].getsockname()[1]
        ws_port_bound = next(iter(self._ws.sockets)).getsockname()[1]
        self.url = f"http://{HOST}:{http_port}"
        self.ws_url = f"ws://{HOST}:{ws_port_bound}"

    async def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.wait_closed(), 2)
        if self._http is not None:
            self._http.close()
            for writer in list(self._writers):  # idle keep-alive connections end now
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http.wait_closed(), 2)

    def drop_websockets(self) -> int:
        """Cut every open websocket abruptly (no close frame); returns how many."""
        n = 0
        for conn in list(self._conns):
            conn.transport.abort()
            n += 1
        return n

    # ---- HTTP ----------------------------------------------------------------

    async def _http_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                size = int(headers.get("content-length") or 0)
                body = await reader.readexactly(size) if size else b""
                status, payload = await self._answer(verb, path, body)
                if status == 0:  # "reset": cut the connection without an answer
                    writer.transport.abort()
                    return
                writer.write(
                    (
                        f"HTTP/1.1 {status} {_HTTP_STATUS.get(status, 'Error')}\r\n"
                        "Content-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\n\r\n"
                    ).encode()
                    + payload
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, verb: str, path: str, body: bytes) -> tuple[int, bytes]:
        self.faults.requests += 1
        if self.faults.delay:
            await asyncio.sleep(self.faults.delay)
        if verb == "GET" and path.rstrip("/") == "/health":
            return 200, b"ok"
        if verb != "POST":
            return 404, b""
        try:
            req = json.loads(body)
        except ValueError:
            return 200, _dump(_error(None, -32700, "Parse error"))
        first = req[0] if isinstance(req, list) and req else req
        fault = self.faults.take(first.get("method") if isinstance(first, dict) else None)
        if fault == "reset":
            return 0, b""
        if fault in ("http500", "http503"):
            return (500 if fault == "http500" else 503), b'{"error":"injected fault"}'
        if isinstance(req, list):
            return 200, _dump([self._one(r, fault) for r in req])
        return 200, _dump(self._one(req, fault))

    def _one(self, req: Any, fault: str | None) -> dict[str, Any]:
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return _error(None, -32600, "Invalid request")
        rid = req.get("id")
        self.faults.calls[req["method"]] += 1
        if fault == "rpc_error":
            return _error(rid, -32005, "Node is behind by 42 slots", {"numSlotsBehind": 42})
        try:
            result = self.node.methods.call(req["method"], req.get("params"))
        except rpc.RpcFault as exc:
            return _error(rid, exc.code, exc.message, exc.data)
        return {"jsonrpc": "2.0", "result": result, "id": rid}

    # ---- websocket -----------------------------------------------------------

    async def _ws_conn(self, conn: ServerConnection) -> None:
        if self.faults.ws_refuse:
            await conn.close(1013, "try again later")
            return
        self._conns.add(conn)
        subs = self.node.hub.attach(conn)
        try:
            async for message in conn:
                await conn.send(_dump(self.node.hub.handle(subs, message)).decode())
        except websockets.ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)
            self.node.hub.detach(conn)


def _error(rid: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": rid}


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Sub:
    sid: int
    kind: str  # logs | account | slot
    key: str | None  # mentioned / watched pubkey (None: all)
    commitment: str
    encoding: str


class Hub:
    """Pubsub: subscriptions of every connection, fed by chain events."""

    _UNSUB = frozenset(
        {"logsUnsubscribe", "accountUnsubscribe", "slotUnsubscribe", "signatureUnsubscribe"}
    )

    def __init__(self, chain_: chain.Chain) -> None:
        self.chain = chain_
        self._ids = itertools.count(1)
        self._subs: dict[ServerConnection, dict[int, Sub]] = {}
        chain_.listeners.append(self._on_event)

    def attach(self, conn: ServerConnection) -> dict[int, Sub]:
        return self._subs.setdefault(conn, {})

    def detach(self, conn: ServerConnection) -> None:
        self._subs.pop(conn, None)

    def handle(self, subs: dict[int, Sub], message: str | bytes) -> dict[str, Any]:
        try:
            req = json.loads(message)
            method, params, rid = req["method"], req.get("params") or [], req.get("id")
        except (ValueError, KeyError, TypeError):
            return _error(None, -32700, "Parse error")
        cfg = next((p for p in params if isinstance(p, dict) and "mentions" not in p), {})
        commitment = (
            "finalized" if cfg.get("commitment", "finalized") == "finalized" else "confirmed"
        )
        sid = next(self._ids)
        if method == "logsSubscribe":
            filt = params[0] if params else "all"
            key = None
            if isinstance(filt, dict):
                mentions = filt.get("mentions") or []
                if len(mentions) != 1:
                    return _error(rid, -32602, "Invalid Request: Only 1 address supported")
                key = mentions[0]
            subs[sid] = Sub(sid, "logs", key, commitment, "")
        elif method == "accountSubscribe":
            if not params or not isinstance(params[0], str):
                return _error(rid, -32602, "Invalid params")
            subs[sid] = Sub(sid, "account", params[0], commitment, cfg.get("encoding", "base58"))
        elif method == "slotSubscribe":
            subs[sid] = Sub(sid, "slot", None, "confirmed", "")
        elif method in self._UNSUB:
            found = bool(params) and subs.pop(int(params[0]), None) is not None
            if not found:
                return _error(rid, -32602, "Invalid subscription id.")
            return {"jsonrpc": "2.0", "result": True, "id": rid}
        else:
            return _error(rid, -32601, "Method not found")
        return {"jsonrpc": "2.0", "result": sid, "id": rid}

    def _on_event(self, kind: str, payload: Any) -> None:
        for conn, subs in list(self._subs.items()):
            for sub in list(subs.values()):
                for note in self._notes(sub, kind, payload):
                    with contextlib.suppress(Exception):
                        asyncio.get_running_loop().create_task(_send(conn, note))

    def _notes(self, sub: Sub, kind: str, payload: Any) -> list[dict[str, Any]]:
        if sub.kind == "slot":
            if kind != "slot":
                return []
            value: Any = {"parent": payload - 1, "root": self.chain.finalized, "slot": payload}
            return [_note("slotNotification", sub.sid, value)]
        if kind == "tx" and sub.commitment == "confirmed":
            recs = [payload]
        elif kind == "finalized" and sub.commitment == "finalized":
            recs = list(payload.txs)
        else:
            return []
        out = []
        for rec in recs:
            ctx = {"slot": rec.slot}
            if sub.kind == "logs" and (sub.key is None or sub.key in rec.keys):
                value = {"signature": rec.signature, "err": rec.err, "logs": rec.logs}
                out.append(_note("logsNotification", sub.sid, {"context": ctx, "value": value}))
            elif sub.kind == "account" and sub.key in rec.keys:
                idx = rec.keys.index(sub.key)
                if not rec.writable[idx]:
                    continue
                from solders.pubkey import Pubkey

                acct = self.chain.svm.get_account(Pubkey.from_string(sub.key))
                if acct is None:
                    continue
                value = render.account(acct, sub.encoding, self.chain)
                out.append(_note("accountNotification", sub.sid, {"context": ctx, "value": value}))
        return out


def _note(method: str, sid: int, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": {"result": result, "subscription": sid}}


async def _send(conn: ServerConnection, note: dict[str, Any]) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        await conn.send(_dump(note).decode())


class SolanaNode:
    """The local node: a chain, its RPC methods, its pubsub hub and its endpoints.

    It answers ``getGenesisHash`` with the cluster it stands in for (mainnet's unless
    told otherwise), since followers refuse an endpoint of another cluster."""

    def __init__(
        self,
        finality_depth: int = 2,
        slot_interval: float | None = None,
        genesis_hash: str = MAINNET_GENESIS,
    ) -> None:
        self.chain = chain.Chain(finality_depth)
        self.genesis_hash = genesis_hash
        self.methods = rpc.Methods(self.chain, genesis_hash)
        self.hub = Hub(self.chain)
        self.endpoints: list[Endpoint] = []
        self.slot_interval = slot_interval
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, port: int = 0, ws_port: int = 0) -> SolanaNode:
        await self.add_endpoint(port, ws_port)
        if self.slot_interval:
            self._ticker = asyncio.create_task(self._tick(self.slot_interval))
        return self

    async def add_endpoint(self, port: int = 0, ws_port: int = 0) -> Endpoint:
        """Another front end on the same chain (a second RPC provider for fallback tests)."""
        ep = Endpoint(self)
        await ep.start(port, ws_port)
        self.endpoints.append(ep)
        return ep

    @property
    def url(self) -> str:
        return self.endpoints[0].url

    @property
    def ws_url(self) -> str:
        return self.endpoints[0].ws_url

    @property
    def faults(self) -> Faults:
        return self.endpoints[0].faults

    def drop_websockets(self) -> int:
        return sum(ep.drop_websockets() for ep in self.endpoints)

    async def _tick(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.chain.advance(1)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for ep in self.endpoints:
            await ep.close()

    async def __aenter__(self) -> SolanaNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
