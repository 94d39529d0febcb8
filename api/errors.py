"""One JSON shape for every refusal, and the guards that keep bad input a 4xx.

Every 4xx (and the rare 5xx) answers::

    {"error": "<machine code>", "message": "<what was wrong>", "fix": "<what to do>", ...}

* :class:`ApiError` is raised by routes and dependencies; extra keys ride along
  (a 409 names the existing token id, a 402 carries the x402 payment body).
* Request validation errors (malformed JSON, wrong types, unknown chain
  literals) are reshaped into that form with the offending fields listed.
* :class:`BodyLimit` refuses oversized bodies with 413 before any handler
  reads them, whether or not the client sent a ``Content-Length``.
* Anything unexpected becomes a JSON 500 without a stack trace; tests and
  the fuzzer treat that as a bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watcher import db

log = structlog.get_logger(__name__)

# Everything asyncpg (or the socket under it) raises when PostgreSQL is unreachable,
# restarting or killed our session, and any other database error on a payer's path:
# all of it is a 503, never a 500 nor a free call.
DB_ERRORS: tuple[type[BaseException], ...] = (
    *db.TRANSIENT_ERRORS,
    TimeoutError,
    asyncpg.PostgresError,
)

MAX_BODY_BYTES = 16 * 1024  # our largest request (a claim with a signature) is well under 1 KiB
# Stripe's signed events (an invoice with many lines) run past 16 KiB; they are
# verified before they are parsed, so a larger allowance is safe there.
LARGE_BODY_PATHS = {"/api/v1/webhooks/stripe": 1024 * 1024}


class ApiError(Exception):
    """A refusal the client can act on: status, code, what was wrong, what to do."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        fix: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.fix = fix
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, "fix": self.fix, **self.extra}

    def response(self) -> JSONResponse:
        return JSONResponse(jsonable_encoder(self.body()), self.status, headers=self.headers)


def service_unavailable(what: str) -> ApiError:
    """503 for database (or RPC) trouble: fail closed, ask the client to retry."""
    return ApiError(
        503,
        "service_unavailable",
        f"{what} is temporarily unavailable",
        "retry in a few seconds; nothing was charged",
        headers={"Retry-After": "5"},
    )


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "fix"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "fix": {"type": "string"},
    },
    "additionalProperties": True,
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error codes a route can answer, all with the error shape."""
    text = {
        400: "Bad request",
        401: "Missing credentials",
        403: "Forbidden",
        404: "Not found",
        409: "Conflict with the current state",
        413: "Body too large",
        422: "Request failed validation",
        429: "Rate limited (see Retry-After)",
        503: "Temporarily unavailable (see Retry-After)",
    }
    return {
        c: {
            "description": text.get(c, "Error"),
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        }
        for c in codes
    }


def _describe(err: Mapping[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    return {"field": ".".join(loc) or "body", "problem": str(err.get("msg", "invalid"))}


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errs = [dict(e) for e in exc.errors()]
    if any(e.get("type") == "json_invalid" for e in errs):
        return ApiError(
            400,
            "malformed_json",
            "the request body is not valid JSON",
            "send a JSON object with Content-Type: application/json",
        ).response()
    fields = [_describe(e) for e in errs][:20]
    summary = "; ".join(f"{f['field']}: {f['problem']}" for f in fields[:3])
    return ApiError(
        422,
        "invalid_request",
        f"the request did not validate ({summary})",
        "correct the listed fields; the schema is at /docs",
        fields=fields,
    ).response()


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    fixes = {
        404: ("not_found", "check the path; the API is described at /docs"),
        405: ("method_not_allowed", "use the method listed for this path at /docs"),
        413: ("body_too_large", "send only the documented fields"),
    }
    code, fix = fixes.get(exc.status_code, ("http_error", "see /docs"))
    return ApiError(
        exc.status_code, code, str(exc.detail), fix, headers=exc.headers or None
    ).response()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("api_unhandled_error", path=request.url.path, error=repr(exc))
    return ApiError(
        500, "internal_error", "the server failed on this request", "retry later"
    ).response()


def install(app: FastAPI) -> None:
    """Register the handlers and the body-size guard on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


def _gateway_limit(scope: Scope) -> int | None:
    """A gateway route's own ``max_body_bytes`` (docs/gateway.md), None elsewhere."""
    app = scope.get("app")
    config = getattr(getattr(app, "state", None), "gateway", None)
    if config is None:
        return None
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else scope.get("path", "")
    found = config.find(scope.get("method", ""), path)
    return found[0].max_body_bytes if found is not None else None


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, declared length or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = LARGE_BODY_PATHS.get(scope.get("path", "")) or _gateway_limit(scope)
        limit = limit or self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException so FastAPI's body reader passes it on unchanged
                    # and the handler above turns it into the JSON 413.
                    raise StarletteHTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = ApiError(
            413,
            "body_too_large",
            self._message(),
            "send only the documented fields",
        ).response()
        await resp(scope, receive, send)
