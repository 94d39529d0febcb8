"""Refunds through the admin API (docs/api.md "Refunds", docs/holds-and-refunds.md).

Every route takes the admin key and the operator's name (``x-admin-operator``); a
request is idempotent by its ``refund_key``. The sender (the daemon's ``refunds`` job)
signs and sends; with no key configured, ``/export`` hands the unsigned transaction to
the wallet that signs it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api import ratelimit
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.routes import admin
from api.text import SafeStr
from watcher import db, networks
from watcher.refunds import candidates, model, proof, requests, senders, store

router = APIRouter(
    prefix="/x402/admin/refunds",
    tags=["admin"],
    dependencies=[Depends(admin.require_admin)],
)
Operator = admin.Operator  # the key, then the operator's name (require_admin)
RefundId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_id: int = Field(ge=1, le=2**63 - 1)
    kind: Literal["whole", "unconsumed", "excess"] = "whole"
    reason: SafeStr = Field(min_length=1, max_length=500)
    refund_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,100}$",
        description="your idempotency key: a repeat returns the same refund",
    )
    destination: SafeStr | None = Field(default=None, max_length=100)
    signature: SafeStr | None = Field(default=None, max_length=200)
    claim_secret: SafeStr | None = Field(default=None, max_length=200)
    amount: int | None = Field(
        default=None, ge=1, le=2**127, description="base units; required with a signature"
    )


def refused(exc: model.Refused) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.fix)


@router.post(
    "",
    summary="Refund a payment (audited, idempotent by refund_key)",
    responses=responses(400, 403, 404, 409, 422, 503),
)
async def create(request: Request, body: RefundRequest, who: Operator) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    order = requests.Order(
        payment_id=body.payment_id,
        kind=body.kind,
        reason=body.reason,
        operator=who,
        refund_key=body.refund_key,
        client=ratelimit.client_id(request),
        claimed=proof.Claimed(
            destination=body.destination,
            signature=body.signature,
            claim_secret=body.claim_secret,
            amount=body.amount,
        ),
    )
    clients = request.app.state.clients

    async def code_of(chain: str, address: str) -> str:
        rpc = clients.eip1271_pool(chain)
        if rpc is None:
            raise model.Refused(
                409,
                "no_rpc_url",
                f"{chain} has no RPC URL: whether the source is a contract cannot be checked",
                "set the network's RPC URL: a source is checked for code",
            )
        return str(await rpc.request("eth_getCode", [address, "latest"]))

    try:
        row, created = await requests.request(pool, request.app.state.settings, order, code_of)
    except model.Refused as exc:
        raise refused(exc) from exc
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return {**store.public(row), "created": created}


@router.get("", summary="List refunds (newest first)", responses=responses(400, 403, 503))
async def listing(
    request: Request,
    who: Operator,
    status: Annotated[model.Status | None, Query()] = None,
    chain: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    try:
        async with pool.acquire() as conn:
            rows = await store.listing(conn, status, chain, limit)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return {"refunds": [store.public(r) for r in rows]}


@router.get(
    "/candidates",
    summary="Payments that may need a refund, with why",
    responses=responses(400, 403, 503),
)
async def candidate_list(
    request: Request, who: Operator, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> dict[str, Any]:
    try:
        rows = await candidates.listing(request.app.state.pool, request.app.state.settings, limit)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    return {"candidates": rows}


async def _one(pool: db.Pool, refund_id: int) -> Any:
    try:
        async with pool.acquire() as conn:
            row = await store.by_id(conn, refund_id)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if row is None:
        raise ApiError(
            404,
            "refund_not_found",
            f"no refund {refund_id}",
            "list the refunds: GET /x402/admin/refunds",
        )
    return row


@router.get("/{refund_id}", summary="One refund", responses=responses(400, 403, 404, 503))
async def one(request: Request, refund_id: RefundId, who: Operator) -> dict[str, Any]:
    return store.public(await _one(request.app.state.pool, refund_id))


@router.get(
    "/{refund_id}/export",
    summary="The refund as an unsigned transaction",
    responses=responses(400, 403, 404, 409, 422, 503),
)
async def export(
    request: Request,
    refund_id: RefundId,
    who: Operator,
    format: Annotated[str | None, Query(pattern=r"^[a-z0-9]{1,20}$")] = None,
) -> dict[str, Any]:
    pool: db.Pool = request.app.state.pool
    row = await _one(pool, refund_id)
    exp = senders.exporter(request.app.state.settings, row["chain"])
    if exp is None:
        raise ApiError(
            409,
            "no_export_wallet",
            f"{row['chain']} refunds are not exported on this server",
            _export_fix(networks.family(row["chain"])),
        )
    try:
        return await exp.export(pool, refund_id, format or exp.formats[0])  # EVM: eip1559
    except model.Refused as exc:
        raise refused(exc) from exc
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    finally:
        await exp.aclose()


def _export_fix(family: str) -> str:
    if family == "evm":
        return (
            "set X402_REFUND_EVM_ADDRESS to the wallet that signs (and no "
            "X402_REFUND_EVM_PRIVATE_KEY: with a key the daemon sends refunds itself)"
        )
    if family == "solana":
        return (
            "set X402_REFUND_SOLANA_ADDRESS to the wallet that signs (and no "
            "X402_REFUND_SOLANA_KEYPAIR: with a keypair the daemon sends refunds itself)"
        )
    return "see docs/holds-and-refunds.md for the network's refund wallet settings"
