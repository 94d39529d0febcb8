"""A webhook receiver on 127.0.0.1 for tests and benchmarks: a real HTTP server (uvicorn)
that verifies every request with the ``standardwebhooks`` package and answers as told.

``behave(webhook_id, n)`` says how to answer the n-th request (1-based) carrying that
id: an :class:`Answer` (status, a delay before answering, a body). ``stop()`` and
``start()`` again on the same port make the receiver go away for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import standardwebhooks
import uvicorn

from devkit.anvil import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass
class Hit:
    """One request as it arrived."""

    at: float  # time.time() on arrival
    body: bytes
    headers: dict[str, str]
    verified: list[int]  # indexes of the secrets whose signature verified


def always_ok(_id: str, _n: int) -> Answer:
    return Answer()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test's loop owns the signals
        yield


@dataclass
class Receiver:
    secrets: Sequence[str]
    behave: Callable[[str, int], Answer] = always_ok
    port: int = field(default_factory=free_port)
    verify: bool = True
    hits: dict[str, list[Hit]] = field(default_factory=lambda: defaultdict(list))
    _server: _Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None,
            access_log=False, lifespan="off", timeout_graceful_shutdown=1,
            interface="asgi3", proxy_headers=False,
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._task.done():
                self._task.result()
            assert time.monotonic() < deadline, "the receiver did not start"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        self._server = self._task = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def ids(self) -> set[str]:
        return {k for k, v in self.hits.items() if v}

    def unverified(self) -> list[Hit]:
        return [h for hs in self.hits.values() for h in hs if not h.verified]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        mid = headers.get("webhook-id", "")
        verified = [i for i, s in enumerate(self.secrets) if self.verify and _ok(s, body, headers)]
        self.hits[mid].append(Hit(time.time(), body, headers, verified))
        answer = self.behave(mid, len(self.hits[mid]))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(b"content-type", b"text/plain"), *answer.headers],
            }
        )
        no_body = answer.status in (204, 304) or answer.status < 200
        await send({"type": "http.response.body", "body": b"" if no_body else answer.body})


def _ok(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True
