"""Held payments (issue 16): the review queue, release and reject, behind the admin key.

Every route also names its operator (``x-admin-operator``): the name goes into the
payment's ``reviewed_by`` and the ``admin_audit`` row written in the same transaction
as the change (watcher/holds.py, watcher/ledger.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api import ratelimit
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.routes import admin
from api.text import SafeStr
from watcher import db, holds

router = APIRouter(
    prefix="/x402",
    tags=["admin"],
    dependencies=[Depends(admin.require_admin)],
)
PaymentId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class ReviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: SafeStr = Field(min_length=1, max_length=holds.NOTE_MAX)


@router.get(
    "/admin/holds",
    summary="Payments held for review, oldest first, each with its risk",
    responses=responses(400, 403, 503),
)
async def list_holds(
    request: Request, limit: Annotated[int, Query(ge=1, le=holds.LIST_LIMIT)] = 100
) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    try:
        async with pool.acquire() as conn:
            held = await holds.queue(conn, limit)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return {"holds": [h for h in held]}


async def _review(
    request: Request, action: holds.Action, payment_id: int, who: str, note: str
) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    try:
        async with pool.acquire() as conn, conn.transaction():
            out = await holds.review(
                conn, action, payment_id, who, note, client=ratelimit.client_id(request)
            )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if out.payment is None:
        raise ApiError(
            404,
            "payment_not_found",
            f"no payment {payment_id}",
            "take the id from GET /x402/admin/holds",
        )
    if not out.moved:
        raise ApiError(
            409,
            "not_held",
            f"payment {payment_id} is {out.payment['state']}, not held: only a held payment "
            f"can be {action}d",
            "list the held payments with GET /x402/admin/holds",
            state=out.payment["state"],
        )
    return {"payment": out.payment}


@router.post(
    "/admin/payments/{payment_id}/release",
    summary="Release a held payment: it is credited (audited, with the operator)",
    responses=responses(400, 403, 404, 409, 413, 422, 503),
)
async def release(
    request: Request,
    body: ReviewRequest,
    payment_id: PaymentId,
    who: admin.Operator,
) -> dict[str, Any]:
    return await _review(request, "release", payment_id, who, body.reason)


@router.post(
    "/admin/payments/{payment_id}/reject",
    summary="Reject a held payment: never claimable, refundable (audited, with the operator)",
    responses=responses(400, 403, 404, 409, 413, 422, 503),
)
async def reject(
    request: Request,
    body: ReviewRequest,
    payment_id: PaymentId,
    who: admin.Operator,
) -> dict[str, Any]:
    return await _review(request, "reject", payment_id, who, body.reason)
