"""Service keys through the admin API (``x-admin-key``, ``x-admin-operator``), as
``watcher service-key`` does: create (the key in the answer, once), list, revoke, each
change audited with the operator. Mounted with the charge endpoint."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api import ratelimit
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.routes import admin
from watcher import db, errors, service_keys
from watcher.gateway_config import GatewayConfig

LABEL = r"^[\x20-\x7e]+$"


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=LABEL)
    routes: list[Annotated[str, Field(min_length=1, max_length=2100, pattern=LABEL)]] | None = (
        Field(default=None, min_length=1, max_length=100)
    )
    all_routes: bool = False

    @model_validator(mode="after")
    def _scope(self) -> CreateKey:
        if (self.routes is None) != self.all_routes:
            raise ValueError("give routes (route labels) or all_routes: true, not both")
        return self


class RevokeKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, pattern=LABEL)


router = APIRouter(
    prefix="/x402/admin/service-keys",
    tags=["admin"],
    dependencies=[Depends(admin.require_admin)],
)


def _pool(request: Request) -> db.Pool:
    pool: db.Pool = request.app.state.pool
    return pool


@router.post("", status_code=201, summary="Create a service key", responses=responses(403, 422))
async def create(request: Request, body: CreateKey, who: admin.Operator) -> dict[str, Any]:
    config: GatewayConfig = request.app.state.gateway
    if body.routes is not None:
        try:
            service_keys.check_routes(body.routes, config)
        except errors.ConfigError as exc:
            raise ApiError(
                422, "unknown_route", "; ".join(exc.problems), "name routes of the gateway file"
            ) from exc
    try:
        made = await service_keys.create(
            _pool(request),
            body.name,
            body.routes,
            operator=who,
            client=ratelimit.client_id(request),
        )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return {"id": made.id, "key": made.key, "note": "shown once: only its hash is kept"}


@router.get("", summary="List service keys (never their secrets)", responses=responses(403))
async def listing(request: Request) -> dict[str, Any]:
    try:
        return {"service_keys": await service_keys.listing(_pool(request))}
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc


@router.post("/{key_id}/revoke", summary="Revoke a service key", responses=responses(403, 404, 422))
async def revoke(
    request: Request,
    key_id: Annotated[int, Path(ge=1, le=2**62)],
    body: RevokeKey,
    who: admin.Operator,
) -> dict[str, Any]:
    try:
        done = await service_keys.revoke(
            _pool(request), key_id, body.reason, operator=who, client=ratelimit.client_id(request)
        )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if not done:
        raise ApiError(
            404, "unknown_service_key", f"no live service key {key_id}", "list the keys first"
        )
    return {"id": key_id, "revoked": True}
