"""Webhook endpoints, events, redelivery and replay through the admin API
(``x-admin-key`` and ``x-admin-operator``), as ``watcher webhooks`` does (docs/webhooks.md,
"Managing endpoints", "Redelivery and replay"). The logic and its audit rows (with the
operator) are ``watcher/webhook_admin.py``'s.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api import ratelimit
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.routes import admin, events_feed
from watcher import db, event_feed, events, webhook_admin

T = TypeVar("T")
TEXT = r"^[^\x00-\x1f\x7f]*$"
EventType = Annotated[str, Field(min_length=1, max_length=100)]
EndpointId = Annotated[str, Path(pattern=r"^we_[0-9a-f]{32}$")]
EventId = Annotated[str, Path(pattern=r"^evt_[0-9]{1,18}$")]


class CreateEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048)
    events: list[EventType] = Field(min_length=1, max_length=webhook_admin.MAX_TYPES)
    description: str | None = Field(default=None, max_length=500, pattern=TEXT)


class UpdateEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[EventType] | None = Field(
        default=None, min_length=1, max_length=webhook_admin.MAX_TYPES
    )
    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=500, pattern=TEXT)


class Rotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_hours: float = Field(default=24, ge=0, le=webhook_admin.MAX_GRACE_HOURS)


class Redeliver(BaseModel):
    model_config = ConfigDict(extra="forbid")
    endpoint_id: str = Field(pattern=r"^we_[0-9a-f]{32}$")


class Replay(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: AwareDatetime
    until: AwareDatetime | None = None
    events: list[EventType] | None = Field(
        default=None, min_length=1, max_length=webhook_admin.MAX_TYPES
    )


router = APIRouter(
    prefix="/x402/admin", tags=["admin"], dependencies=[Depends(admin.require_admin)]
)


async def _run(work: Awaitable[T]) -> T:
    """The call's result; bad input and database trouble in our JSON error body."""
    try:
        return await work
    except webhook_admin.Invalid as exc:
        status = 422
        if isinstance(exc, webhook_admin.Conflict):
            status = 409
        elif isinstance(exc, webhook_admin.NotFound):
            status = 404
        raise ApiError(status, exc.code, exc.message, exc.fix) from exc
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc


def _found(value: T | None, what: str) -> T:
    if value is None:
        raise ApiError(404, f"unknown_{what.split()[0]}", f"no {what}", "list them first")
    return value


def _event_number(evt_id: str) -> int:
    n = events.parse_public_id(evt_id)
    assert n is not None  # the path pattern let only evt_<digits> through
    return n


def _pool(request: Request) -> db.Pool:
    pool: db.Pool = request.app.state.pool
    return pool


@router.post(
    "/webhooks",
    status_code=201,
    summary="Create a webhook endpoint (secret shown once)",
    responses=responses(403, 422, 503),
)
async def create(request: Request, body: CreateEndpoint, who: admin.Operator) -> dict[str, Any]:
    return await _run(
        webhook_admin.create(
            _pool(request),
            request.app.state.settings,
            body.url,
            body.events,
            body.description,
            ratelimit.client_id(request),
            who,
        )
    )


@router.get(
    "/webhooks",
    summary="List webhook endpoints (never their secrets)",
    responses=responses(403, 503),
)
async def listing(request: Request) -> dict[str, Any]:
    return {"webhooks": await _run(webhook_admin.listing(_pool(request)))}


@router.get(
    "/webhooks/{endpoint_id}",
    summary="One webhook endpoint",
    responses=responses(403, 404, 422, 503),
)
async def one(request: Request, endpoint_id: EndpointId) -> dict[str, Any]:
    got = await _run(webhook_admin.get(_pool(request), endpoint_id))
    return _found(got, f"webhook endpoint {endpoint_id}")


@router.patch(
    "/webhooks/{endpoint_id}",
    summary="Change url, events, enabled, description",
    responses=responses(403, 404, 422, 503),
)
async def update(
    request: Request, endpoint_id: EndpointId, body: UpdateEndpoint, who: admin.Operator
) -> dict[str, Any]:
    changes = {k: getattr(body, k) for k in body.model_fields_set}
    for k in ("url", "events", "enabled"):
        if k in changes and changes[k] is None:
            raise ApiError(
                422, "invalid_request", f"{k} cannot be null", f"give a {k} or leave it out"
            )
    if not changes:
        raise ApiError(
            422,
            "nothing_to_change",
            "the body names no field",
            "give some of url, events, enabled, description",
        )
    got = await _run(
        webhook_admin.update(
            _pool(request),
            request.app.state.settings,
            endpoint_id,
            changes,
            ratelimit.client_id(request),
            who,
        )
    )
    return _found(got, f"webhook endpoint {endpoint_id}")


@router.delete(
    "/webhooks/{endpoint_id}",
    summary="Delete an endpoint; cancel its pending deliveries",
    responses=responses(403, 404, 422, 503),
)
async def delete(request: Request, endpoint_id: EndpointId, who: admin.Operator) -> dict[str, Any]:
    cancelled = await _run(
        webhook_admin.delete(_pool(request), endpoint_id, ratelimit.client_id(request), who)
    )
    n = _found(cancelled, f"webhook endpoint {endpoint_id}")
    return {"id": endpoint_id, "deleted": True, "deliveries_cancelled": n}


@router.post(
    "/webhooks/{endpoint_id}/rotate-secret",
    summary="A new signing secret (shown once); the old one signs during the grace",
    responses=responses(403, 404, 422, 503),
)
async def rotate(
    request: Request, endpoint_id: EndpointId, who: admin.Operator, body: Rotate | None = None
) -> dict[str, Any]:
    grace = (body or Rotate()).grace_hours
    got = await _run(
        webhook_admin.rotate(_pool(request), endpoint_id, grace, ratelimit.client_id(request), who)
    )
    return _found(got, f"webhook endpoint {endpoint_id}")


@router.post(
    "/webhooks/{endpoint_id}/replay",
    summary=f"Queue every matching event since a time (at most {webhook_admin.REPLAY_CAP})",
    responses=responses(403, 404, 409, 422, 503),
)
async def replay(
    request: Request, endpoint_id: EndpointId, body: Replay, who: admin.Operator
) -> dict[str, Any]:
    got = await _run(
        webhook_admin.replay(
            _pool(request),
            endpoint_id,
            body.since,
            body.until,
            body.events,
            ratelimit.client_id(request),
            who,
        )
    )
    return _found(got, f"webhook endpoint {endpoint_id}")


@router.get(
    "/events", summary="The event feed, for the operator", responses=responses(400, 403, 422, 503)
)
async def event_list(
    request: Request,
    after: Annotated[str | None, events_feed.AFTER] = None,
    type_: Annotated[list[str] | None, events_feed.TYPE] = None,
    limit: Annotated[int, events_feed.LIMIT] = event_feed.DEFAULT_LIMIT,
) -> Response:
    return await events_feed.serve(request, after, type_, limit)


@router.get(
    "/events/{evt_id}",
    summary="An event, its deliveries and their attempts",
    responses=responses(403, 404, 422, 503),
)
async def event(request: Request, evt_id: EventId) -> dict[str, Any]:
    got = await _run(webhook_admin.event_detail(_pool(request), _event_number(evt_id)))
    return _found(got, f"event {evt_id}")


@router.post(
    "/events/{evt_id}/redeliver",
    summary="Send an event to an endpoint again, now",
    responses=responses(403, 404, 409, 422, 503),
)
async def redeliver(
    request: Request, evt_id: EventId, body: Redeliver, who: admin.Operator
) -> dict[str, Any]:
    return await _run(
        webhook_admin.redeliver(
            _pool(request),
            _event_number(evt_id),
            body.endpoint_id,
            ratelimit.client_id(request),
            who,
        )
    )
