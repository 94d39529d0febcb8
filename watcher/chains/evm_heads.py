"""New block headers over a websocket ``newHeads`` subscription, with reconnects.

The follower never depends on this: while the socket is down it polls over
HTTP. When the socket comes back it wakes the follower, which fills the gap
from its cursor, so no block is skipped however long the outage lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Sequence

import structlog
import websockets
from websockets.asyncio.client import connect

from watcher import metrics
from watcher.chains.evm_logs import Header, parse_header
from watcher.keys import redact_url

log = structlog.get_logger(__name__)

_SUBSCRIBE = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
)


class HeadSubscription:
    """Calls ``on_head`` for each header the node pushes; ``connected`` while subscribed."""

    def __init__(
        self,
        chain: str,
        urls: Sequence[str],
        on_head: Callable[[Header], None],
        *,
        max_backoff: float = 5.0,
        open_timeout: float = 5.0,
    ) -> None:
        self.chain = chain
        self.urls = list(urls)
        self.on_head = on_head
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.connected = False
        self.on_connect: Callable[[], None] = lambda: None

    async def run(self, stop: asyncio.Event) -> None:
        """Subscribe, reconnect with backoff and jitter, until ``stop``."""
        attempt = 0
        while not stop.is_set():
            url = self.urls[attempt % len(self.urls)]
            try:
                await self._session(url)
                attempt = 0  # a clean close after a good session: reconnect promptly
            except (OSError, TimeoutError, ValueError, websockets.WebSocketException) as exc:
                log.warning("ws_down", chain=self.chain, endpoint=redact_url(url), error=repr(exc))
                attempt += 1
            finally:
                self.connected = False
            if stop.is_set():
                break
            metrics.WS_RECONNECTS.labels(self.chain).inc()
            delay = min(self.max_backoff, 0.05 * 2**attempt) * (0.5 + random.random() / 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _session(self, url: str) -> None:
        async with connect(url, open_timeout=self.open_timeout, max_size=2**22) as ws:
            await ws.send(_SUBSCRIBE)
            reply = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if not isinstance(reply, dict) or not reply.get("result"):
                raise ValueError(f"subscription refused: {str(reply)[:200]}")
            self.connected = True
            log.info("ws_subscribed", chain=self.chain, endpoint=redact_url(url))
            self.on_connect()
            async for message in ws:
                data = json.loads(message)
                params = data.get("params") if isinstance(data, dict) else None
                if not isinstance(params, dict) or not isinstance(params.get("result"), dict):
                    continue  # not a notification (e.g. a late answer): nothing to do
                self.on_head(parse_header(params["result"]))
