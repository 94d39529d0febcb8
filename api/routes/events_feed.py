"""``GET /x402/events``: the event feed for pull consumers (docs/webhooks.md, "The event
feed"). Authenticated by the admin key (``x-admin-key``, with the operator's name in
``x-admin-operator`` as on every admin request) or a read-only feed key
(``Authorization: Bearer erk_…``, made with ``watcher event-key create``; a machine's
key, so no operator). What it
shows and in which order is ``watcher/event_feed.py``'s; the admin API serves the same
answer at ``GET /x402/admin/events`` through :func:`serve`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from api import operator
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from watcher import db, event_feed, events
from watcher.settings import Settings

LIMIT = Query(ge=1, le=event_feed.MAX_LIMIT)
TYPE = Query(alias="type", max_length=100)
AFTER = Query(max_length=30)


async def require_reader(
    request: Request,
    x_admin_key: Annotated[str | None, Header(alias="x-admin-key")] = None,
    authorization: Annotated[str | None, Header()] = None,
    x_admin_operator: Annotated[str | None, Header(alias="x-admin-operator")] = None,
) -> None:
    """The admin key (with its operator: 400 without) or a live read-only key; 401
    without either, 403 for a wrong one."""
    settings: Settings = request.app.state.settings
    admin = settings.admin_key()
    given = (x_admin_key or "").encode("utf-8")
    if admin is not None and hmac.compare_digest(given, admin.encode("utf-8")):
        request.state.operator = await operator.require_operator(x_admin_operator)
        return
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        try:
            allowed = await event_feed.key_allowed(request.app.state.pool, key.strip())
        except DB_ERRORS as exc:
            raise service_unavailable("the database") from exc
        if allowed:
            return
    if x_admin_key is None and authorization is None:
        raise ApiError(
            401,
            "feed_key_missing",
            "the event feed needs a key",
            "send Authorization: Bearer <read-only key> (watcher event-key create) "
            "or the x-admin-key header",
        )
    raise ApiError(
        403,
        "feed_key_refused",
        "the key given is not a live read-only key nor the admin key",
        "ask the operator for a read-only key (watcher event-key create); revoked keys stop",
    )


async def serve(
    request: Request, after: str | None, types: list[str] | None, limit: int
) -> Response:
    """One page of the feed as JSON: ``{"data": [event, ...], "next", "has_more"}``."""
    cursor = None
    if after is not None:
        cursor = events.parse_public_id(after)
        if cursor is None:
            raise ApiError(
                400,
                "invalid_cursor",
                f"after={after[:30]!r} is not an event id",
                "send the next value of the previous page (evt_<n>), or no after to start",
            )
    if types:
        unknown = sorted({t for t in types if t not in events.TYPES})
        if unknown:
            raise ApiError(
                422,
                "unknown_event_type",
                f"unknown event types: {', '.join(unknown)}",
                f"type= takes some of: {', '.join(events.TYPES)}",
            )
    pool: db.Pool = request.app.state.pool
    try:
        async with pool.acquire() as conn:
            got = await event_feed.page(conn, cursor, types or None, limit)
    except event_feed.UnknownCursor as exc:
        raise ApiError(
            400,
            "unknown_cursor",
            f"no event {exc.args[0]}",
            "send the next value of a previous page, or no after to start from the first event",
        ) from exc
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return Response(event_feed.render(got), media_type="application/json")


router = APIRouter(prefix="/x402", tags=["events"])


@router.get(
    "/events",
    summary="The event feed: events after a cursor, oldest first",
    dependencies=[Depends(require_reader)],
    responses=responses(400, 401, 403, 422, 503),
)
async def feed(
    request: Request,
    after: Annotated[str | None, AFTER] = None,
    type_: Annotated[list[str] | None, TYPE] = None,
    limit: Annotated[int, LIMIT] = event_feed.DEFAULT_LIMIT,
) -> Response:
    return await serve(request, after, type_, limit)
