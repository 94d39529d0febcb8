"""Operator routes behind ``x-admin-key``: housekeeping, stats, manual settle/invalidate.

The key is compared in constant time. While ``X402_ADMIN_KEY`` is unset or a
placeholder every admin route answers 403: no default key ever opens them. Every
admin request also names its operator (``x-admin-operator``, api/operator.py), reads
included: one shared key cannot tell people apart. Manual marks write an
``admin_audit`` row, with that name, in the same transaction as the change.
"""

from __future__ import annotations

import hmac
import json
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Header, Path, Query, Request

from api import operator, ratelimit
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.models import MarkRequest
from watcher import db, ledger
from watcher.settings import Settings


async def require_admin(
    request: Request,
    x_admin_key: Annotated[str | None, Header(alias="x-admin-key")] = None,
    x_admin_operator: Annotated[str | None, Header(alias="x-admin-operator")] = None,
) -> str:
    """The operator of an admin request: 403 without the admin key, then 400 without a
    valid ``x-admin-operator`` (the key first, so a caller without it learns nothing
    more). The name is returned (a handler that records it depends on this again:
    FastAPI runs it once per request) and kept in ``request.state.operator``."""
    settings: Settings = request.app.state.settings
    expected = settings.admin_key()
    if expected is None:
        raise ApiError(
            403,
            "admin_disabled",
            "admin routes are disabled on this server",
            "set X402_ADMIN_KEY to a strong secret and restart",
        )
    given = (x_admin_key or "").encode("utf-8")
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise ApiError(
            403,
            "admin_forbidden",
            "missing or wrong x-admin-key",
            "send the configured X402_ADMIN_KEY in the x-admin-key header",
        )
    name = await operator.require_operator(x_admin_operator)
    request.state.operator = name
    return name


Operator = Annotated[str, Depends(require_admin)]


router = APIRouter(prefix="/x402", tags=["admin"], dependencies=[Depends(require_admin)])


def _plain(value: Any) -> Any:
    # numeric columns arrive as Decimal: money leaves as an exact string, never a float
    return format(value, "f") if isinstance(value, Decimal) else value


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in records]


@router.post(
    "/cleanup",
    summary="Expire stale invoices, prune rate-limit windows and expired Idempotency-Keys",
    dependencies=[Depends(ratelimit.limit("cleanup"))],
    responses=responses(403, 429, 503),
)
async def cleanup(request: Request) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    try:
        # One transaction: each expiry and its invoice.expired event commit together.
        async with pool.acquire() as conn, conn.transaction():
            expired = await ledger.expire_invoices(conn)
        await pool.execute(db.q("api_rate_prune"))
        # Expired Idempotency-Keys are forgotten and their stored answers dropped
        # (the paywall's, and the charge endpoint's).
        forgotten = [
            await pool.execute(db.q(q)) for q in ("api_idem_prune", "gateway_charge_prune")
        ]
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return {
        "invoices_expired": expired,
        "idempotency_keys_forgotten": sum(int(f.split()[-1]) for f in forgotten),
    }


@router.get(
    "/admin/stats",
    summary="Payments, payers, endpoint usage (the reporting views)",
    responses=responses(403, 503),
)
async def stats(request: Request) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    try:
        async with pool.acquire() as conn:
            out = {
                "last_24h": _rows(await conn.fetch(db.q("api_admin_stats_24h"))),
                "top_payers": _rows(await conn.fetch(db.q("api_admin_top_payers"))),
                "endpoints": _rows(await conn.fetch(db.q("api_admin_endpoint_stats"))),
                "active_tokens": _rows(await conn.fetch(db.q("api_admin_active_tokens")))[0],
            }
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return out


@router.get(
    "/admin/audit",
    summary="Who did what: the admin audit, newest first (filters optional)",
    responses=responses(400, 403, 422, 503),
)
async def audit_list(
    request: Request,
    payment_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    # patterns keep what PostgreSQL cannot store (NUL, lone surrogates) out: a 422
    subject: Annotated[str | None, Query(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
    operator_name: Annotated[
        str | None, Query(alias="operator", pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@+\-]{0,63}$")
    ] = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    try:
        rows = await pool.fetch(
            db.q("api_admin_audit_list"), payment_id, subject, operator_name, before, limit
        )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    items = [
        {**dict(r), "detail": None if r["detail"] is None else json.loads(r["detail"])}
        for r in rows
    ]
    # a full page may have more: ask again with before=next_before
    return {"audit": items, "next_before": items[-1]["id"] if len(items) == limit else None}


@router.post(
    "/admin/payments/{payment_id}/mark",
    summary="Settle or invalidate a payment by hand (audited)",
    responses=responses(403, 404, 409, 413, 422, 503),
)
async def mark_payment(
    request: Request,
    body: MarkRequest,
    payment_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    who: Operator,
) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    # the payment's own reason names the operator too: watcher explain shows it
    reason = f"{body.action} by operator {who}: {body.reason}"
    try:
        async with pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(db.q("api_payment_state"), payment_id)
            if before is None:
                raise ApiError(
                    404,
                    "payment_not_found",
                    f"no payment {payment_id}",
                    "take the id from verify-payment or the stats",
                )
            if body.action == "settle":
                row = await ledger.admin_settle(conn, payment_id, reason)
            else:
                row = await ledger.admin_invalidate(conn, payment_id, reason)
            if row is None:
                raise ApiError(
                    409,
                    "cannot_mark",
                    f"a {before['state']} payment cannot be marked {body.action}",
                    "settle: observed, orphaned, below_minimum or not_ours payments; "
                    "invalidate: observed, credited or claimed ones",
                )
            # A settle a screening rule fires for holds the payment instead (issue 16).
            to_state = row["state"] if body.action == "settle" else "not_ours"
            audit = await conn.fetchrow(
                db.q("api_admin_audit"),
                body.action,
                payment_id,
                before["state"],
                to_state,
                body.reason,
                ratelimit.client_id(request),
                who,
            )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    assert audit is not None
    out: dict[str, Any] = {
        "payment_id": payment_id,
        "from_state": before["state"],
        "to_state": to_state,
        "audit_id": audit["id"],
        "at": audit["at"],
        "operator": who,
    }
    if to_state == "held":
        out["held"] = "a screening rule fired: the payment is held for review, not credited "
        out["held"] += "(GET /x402/admin/holds; release or reject it there)"
    return out
