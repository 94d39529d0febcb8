"""A small server-sent-events reader over real HTTP, for tests (and later a checkout page's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

COMMENT = ":"  # what next_item() returns for a comment line (a heartbeat)


@dataclass(frozen=True)
class Message:
    id: str | None
    event: str
    data: dict[str, Any]


class Stream:
    """The messages of one open response, in order; comments counted."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines().__aiter__()
        self.comments = 0
        self.ended = False

    async def next_item(self, timeout: float = 20.0) -> Message | str | None:
        """The next message, COMMENT for a comment, None when the server ended the stream."""
        fields: dict[str, str] = {}
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    line = await self._lines.__anext__()
                except StopAsyncIteration:
                    self.ended = True
                    return None
                if line.startswith(":"):
                    self.comments += 1
                    return COMMENT
                if line == "":
                    if fields or data:
                        payload = json.loads("\n".join(data)) if data else {}
                        return Message(fields.get("id"), fields.get("event", "message"), payload)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    data.append(value)
                else:
                    fields[name] = value

    async def next(self, timeout: float = 20.0) -> Message | None:
        """The next message (heartbeats skipped, within ``timeout`` in all); None when the
        stream ended."""
        async with asyncio.timeout(timeout):
            while True:
                item = await self.next_item(timeout)
                if item != COMMENT:
                    assert item is None or isinstance(item, Message)
                    return item


@contextlib.asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient, url: str, last_event_id: str | None = None
) -> AsyncIterator[Stream]:
    """GET ``url`` as an event stream (2xx asserted); closed on exit."""
    headers = {"accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id
    async with http.stream("GET", url, headers=headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            raise AssertionError(f"{url}: {resp.status_code} {resp.text}")
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield Stream(resp)
