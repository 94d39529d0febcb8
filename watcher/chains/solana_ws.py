"""Realtime hints for the Solana follower: websocket ``logsSubscribe`` (mentions).

The socket only *wakes* the follower early; it never carries data the
follower trusts. When the socket is down the follower simply polls, so a
dropped connection costs latency, never a payment. The small waiting helpers
the follower's loop uses live here too. Reconnects back off
(0.5 s doubling to 10 s) and are counted in ``watcher_ws_reconnects_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import structlog
import websockets
from websockets.asyncio.client import connect

from watcher import metrics
from watcher.keys import redact_url

log = structlog.get_logger(__name__)

MAX_BACKOFF = 10.0
T = TypeVar("T")


async def hints(
    urls: Sequence[str],
    accounts: Callable[[], Sequence[str]],
    wake: asyncio.Event,
    stop: asyncio.Event,
    *,
    changed: asyncio.Event,
    chain: str,
) -> None:
    """Keep subscriptions for ``accounts()`` open on one of ``urls``; set ``wake`` on every note.

    ``changed`` is set by the follower when its account list changes: the
    connection is then re-established with the new list. Reconnects are counted
    under ``chain``, the network's registry name (mainnet and devnet apart).
    """
    backoff = 0.5
    attempt = 0
    while not stop.is_set():
        changed.clear()
        url = urls[attempt % len(urls)]  # a failing socket moves on to the next URL
        try:
            async with connect(url, open_timeout=5, close_timeout=1, max_size=2**22) as ws:
                await _subscribe(ws, accounts())
                backoff = 0.5
                wake.set()  # catch up on anything sent while we were away
                await _pump(ws, wake, stop, changed)
        except (OSError, TimeoutError, websockets.WebSocketException, ValueError) as exc:
            log.info("solana_ws_down", endpoint=redact_url(url), error=repr(exc))
        if stop.is_set():
            return
        if not changed.is_set():
            attempt += 1
            metrics.WS_RECONNECTS.labels(chain).inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)


async def _subscribe(ws: websockets.ClientConnection, accounts: Sequence[str]) -> None:
    rid = 0
    for account in accounts:
        for commitment in ("confirmed", "finalized"):
            rid += 1
            await ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": rid,
                        "method": "logsSubscribe",
                        "params": [{"mentions": [account]}, {"commitment": commitment}],
                    }
                )
            )


async def _pump(
    ws: websockets.ClientConnection,
    wake: asyncio.Event,
    stop: asyncio.Event,
    changed: asyncio.Event,
) -> None:
    stop_wait = asyncio.ensure_future(stop.wait())
    change_wait = asyncio.ensure_future(changed.wait())
    try:
        while True:
            recv = asyncio.ensure_future(ws.recv())
            done, _ = await asyncio.wait(
                {recv, stop_wait, change_wait}, return_when=asyncio.FIRST_COMPLETED
            )
            if recv not in done:
                recv.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.WebSocketException):
                    await recv
                return
            message = json.loads(recv.result())
            if isinstance(message, dict) and message.get("method") == "logsNotification":
                wake.set()
    finally:
        stop_wait.cancel()
        change_wait.cancel()


async def nothing() -> None:
    return None


async def gather_or_cancel(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """gather, but the first failure cancels the rest (no request outlives the pass)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def wait_for_wake(stop: asyncio.Event, wake: asyncio.Event | None, seconds: float) -> None:
    """Sleep up to ``seconds``; return early when ``stop`` or ``wake`` is set."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
