"""``Idempotency-Key`` on token calls: a retry is safe, never free.

As Stripe's idempotent requests and the IETF Idempotency-Key draft: the key is
bound to the token and to a fingerprint of the request (method, path with
query string, body). The first call is charged and run; its answer (status,
the headers in :data:`STORED_HEADERS`, body) is stored in its usage row before
its last byte leaves (:class:`StoreAnswers`). Then, under the same key:

* the same request gets the stored answer, handler not run, nothing charged,
  with ``Idempotent-Replayed: true``;
* another request is 422 ``idempotency_key_reused``;
* while the first call is still running, 409 ``idempotency_key_in_progress``;
  a call 'running' for longer than :data:`RUNNING_BOUND` was lost (a crash
  between charge and store): 409 ``idempotency_key_abandoned``, use a new key;
* a streamed answer, or one over :data:`MAX_STORED_BODY_BYTES`, is not kept:
  409 ``idempotency_answer_not_stored``.

A key lives 24 h or until the token's end, whichever is first; afterwards it is
forgotten and a call with it is a new call (charged, run). A call refunded
for a 5xx (``paywall.RefundOn5xx``) releases its key: the retry is charged and
run normally.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from fastapi import Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import text
from api.errors import DB_ERRORS, MAX_BODY_BYTES, ApiError
from watcher import db, metrics

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
KEY_TTL = timedelta(hours=24)
RUNNING_BOUND = timedelta(minutes=10)  # far beyond any handler: presumed lost after it
MAX_FINGERPRINT_BODY_BYTES = MAX_BODY_BYTES
MAX_STORED_BODY_BYTES = 64 * 1024
# What a replay repeats besides status and body: what describes the content and
# the payment; never cookies, dates or hop-by-hop headers.
STORED_HEADERS = frozenset(
    {
        "content-type",
        "content-language",
        "content-encoding",
        "content-disposition",
        "cache-control",
        "etag",
        "last-modified",
        "location",
        "link",
        "payment-response",
        "x-payment-response",
    }
)
STATE_KEY = "idempotency_usage"


def check_key(key: str) -> None:
    """400 unless the key is 1 to 255 printable ASCII characters (checked before any query)."""
    text.check_header(HEADER, key, printable_ascii=True)
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ApiError(
            400,
            "invalid_header",
            f"the {HEADER} header must be 1 to {MAX_KEY_CHARS} characters",
            "send a fresh random key (a UUID) per distinct call",
            header=HEADER,
        )


async def fingerprint(request: Request) -> bytes:
    """SHA-256 over method, raw path, query string and body (each length-prefixed)."""
    body = await request.body()
    if len(body) > MAX_FINGERPRINT_BODY_BYTES:
        raise ApiError(
            413,
            "body_too_large",
            f"a call with an {HEADER} may carry at most {MAX_FINGERPRINT_BODY_BYTES} bytes",
            "send a smaller body",
        )
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    digest = hashlib.sha256()
    for part in (scope["method"].encode(), raw_path, scope.get("query_string", b""), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.digest()


class Replay(Exception):
    """The stored answer of a call already made under this key: sent as is."""

    def __init__(self, status: int, headers: list[list[str]], body: bytes) -> None:
        super().__init__(f"replay of a {status} answer")
        self.status = status
        self.headers = headers
        self.body = body

    def response(self) -> Response:
        resp = Response(content=self.body, status_code=self.status)
        for name, value in self.headers:
            resp.headers.append(name, value)
        resp.headers[REPLAYED_HEADER] = "true"
        return resp


async def replay_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Replay)
    metrics.METERED_CALLS.labels("replayed").inc()
    return exc.response()


class _TwinWon(Exception):
    """A concurrent call with the same key was charged first."""


async def charge(
    conn: db.Connection,
    digest: bytes,
    cost: int,
    endpoint: str,
    key: str,
    request_hash: bytes,
) -> asyncpg.Record | None:
    """Charge a keyed call (the ``api_meter_keyed`` row, None when the token cannot pay),
    or raise the answer for a key already used: :class:`Replay` or an ApiError."""
    await _answer_prior(conn, digest, key, request_hash)
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                db.q("api_meter_keyed"), digest, cost, endpoint, key, request_hash, KEY_TTL
            )
            if row is not None and row["usage_id"] is None:
                raise _TwinWon  # roll our decrement back: the twin's charge covers this call
    except _TwinWon:
        await _answer_prior(conn, digest, key, request_hash)
        raise _in_progress() from None  # the twin was refunded meanwhile: retry
    return row


async def _answer_prior(conn: db.Connection, digest: bytes, key: str, request_hash: bytes) -> None:
    prior = await conn.fetchrow(db.q("api_idem_lookup"), digest, key, RUNNING_BOUND)
    if prior is None:
        return
    if prior["key_expired"]:
        await conn.execute(db.q("api_idem_forget"), prior["usage_id"])
        return
    if prior["request_hash"] is not None and prior["request_hash"] != request_hash:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"this {HEADER} was already used for a different request (to {prior['endpoint']})",
            f"use a fresh {HEADER} for every distinct call; a retry must repeat the method, "
            "path, query string and body exactly",
        )
    state = prior["replay_state"]
    if state == "stored":
        headers = json.loads(prior["response_headers"] or "[]")
        raise Replay(prior["response_status"], headers, bytes(prior["response_body"] or b""))
    if state == "running" and not prior["overdue"]:
        raise _in_progress()
    if state == "running":
        raise ApiError(
            409,
            "idempotency_key_abandoned",
            f"the call under this {HEADER} was charged but its answer was lost",
            f"send the call again with a new {HEADER} (it is charged again)",
        )
    raise ApiError(
        409,
        "idempotency_answer_not_stored",
        f"the answer to the call under this {HEADER} was streamed or too large to keep",
        f"it cannot be replayed; send a new {HEADER} for a new (charged) call",
    )


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_progress",
        f"the call under this {HEADER} is still running",
        "retry in a moment: the stored answer is replayed once it finishes",
        headers={"Retry-After": "1"},
    )


class StoreAnswers:
    """Keep the answer of a keyed, charged call in its usage row before its last byte
    leaves, so a client that saw the answer and retries gets it replayed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        status, headers, chunks, size, streamed = 0, [], [], 0, False

        async def watch(message: Message) -> None:
            nonlocal status, headers, size, streamed
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    [k.decode("latin-1"), v.decode("latin-1")]
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() in STORED_HEADERS
                ]
            elif message["type"] == "http.response.body" and STATE_KEY in state:
                more = bool(message.get("more_body", False))
                streamed = streamed or more
                chunk = message.get("body", b"")
                size += len(chunk)
                if not streamed and size <= MAX_STORED_BODY_BYTES:
                    chunks.append(chunk)
                if not more and status < 500:  # a 5xx is refunded and its key released
                    keep = not streamed and size <= MAX_STORED_BODY_BYTES
                    answer = (status, headers, b"".join(chunks)) if keep else (status, None, None)
                    await _finish(scope, state.pop(STATE_KEY), *answer)
            await send(message)

        await self.app(scope, receive, watch)


async def _finish(
    scope: Scope, usage_id: int, status: int, headers: list[list[str]] | None, body: bytes | None
) -> None:
    pool: db.Pool = scope["app"].state.pool
    replay_state = "stored" if body is not None else "unreplayable"
    stored = json.dumps(headers) if headers is not None else None
    try:
        async with asyncio.timeout(5.0):
            await pool.execute(
                db.q("api_idem_finish"), usage_id, replay_state, status, stored, body
            )
    except DB_ERRORS as exc:  # the row stays 'running': replays get 409, never a free run
        log.error("idempotency_store_failed", usage_id=usage_id, error=repr(exc))
