"""Our own rail under ``/x402/...``: pricing, chains, invoices, lookup, claims, token status.

Pay an invoice (or any transfer), claim the one access token it buys, spend it
on paid routes. Not the x402 protocol (that is ``api/x402/``): only the URL
prefix is shared. Every answer comes from settings and the database the
followers write; the only RPC call is the EIP-1271 check of a contract-wallet
claim, through the app's pool (``app.state.clients``).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse

from api import chains, invoice_stream, invoices, lookup, payment_required, paywall, ratelimit
from api.errors import DB_ERRORS, ApiError, responses, service_unavailable
from api.models import (
    ClaimRequest,
    Invoice,
    InvoiceRequest,
    TokenIssued,
    TokenStatus,
    VerifyRequest,
)
from api.x402.clients import Clients
from watcher import db, money
from watcher.settings import Settings

router = APIRouter(prefix="/x402", tags=["x402"])

FOLLOWER_STALE_SECONDS = 300.0
STRIPE_TIERS = (("pro", 89), ("team", 199), ("enterprise", 499))


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pool(request: Request) -> db.Pool:
    pool: db.Pool = request.app.state.pool
    return pool


@router.get(
    "/pricing",
    summary="Price per call, minimum, token lifetime, subscriptions",
    dependencies=[Depends(ratelimit.limit("pricing"))],
    responses=responses(429, 503),
)
async def pricing(request: Request) -> dict[str, Any]:
    s = _settings(request)
    price = s.price_per_call_units
    return {
        "price_per_call": str(price),
        "price_per_call_usd": money.usd(price),
        "requests_per_dollar": 1_000_000 // price,
        "minimum_payment": str(s.min_payment_units),
        "minimum_payment_usd": money.usd(s.min_payment_units),
        "token_lifetime_hours": s.x402_token_expiry_hours,
        "currency": "USDC (6 decimals); amounts are strings of base units",
        "stripe_tiers": [
            {
                "tier": name,
                "usd_per_month": dollars,
                "available": bool(getattr(s, f"stripe_price_id_{name}")),
            }
            for name, dollars in STRIPE_TIERS
        ],
    }


@router.get(
    "/supported-chains",
    summary="Where to pay on each chain, and follower health",
    dependencies=[Depends(ratelimit.limit("supported-chains"))],
    responses=responses(429, 503),
)
async def supported_chains(request: Request) -> dict[str, Any]:
    s = _settings(request)
    try:
        status = {r["chain"]: r for r in await _pool(request).fetch(db.q("api_chain_status"))}
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    out = []
    for c in chains.all_chains(s):
        row = status.get(c.name)
        out.append(
            {
                "chain": c.name,
                "accepting": c.enabled,
                "pay_to": c.pay_to_display,
                "asset": c.asset_display,
                "decimals": 6,
                "confirmations": c.confirmations,
                "commitment": c.commitment,
                "chain_id": c.chain_id,
                "follower_healthy": row is not None
                and row["age_seconds"] is not None
                and row["age_seconds"] < FOLLOWER_STALE_SECONDS,
                "head": None if row is None else row["head"],
            }
        )
    return {"chains": out}


@router.post(
    "/invoices",
    name="create_invoice",
    status_code=201,
    response_model=Invoice,
    response_model_exclude_none=True,
    summary="Open an invoice: a unique amount (EVM) or a reference key (Solana)",
    dependencies=[Depends(ratelimit.limit("invoices"))],
    responses=responses(400, 413, 422, 429, 503),
)
async def create_invoice(request: Request, body: InvoiceRequest) -> dict[str, Any]:
    s = _settings(request)
    units = invoices.requested_units(s, body.requests, body.amount_usd)
    return await invoices.create(_pool(request), s, body.chain, units)


@router.get(
    "/invoices/{invoice_id}",
    response_model=Invoice,
    response_model_exclude_none=True,
    summary="Invoice status: open | paid (k of n confirmations) | credited | expired | claimed",
    responses=responses(404, 422, 503),
)
async def get_invoice(request: Request, invoice_id: UUID) -> dict[str, Any]:
    return await invoices.status(_pool(request), _settings(request), invoice_id)


@router.get(
    "/invoices/{invoice_id}/events",
    summary="Invoice status as server-sent events: open, paid (k of n), credited, claimed",
    response_class=StreamingResponse,
    responses={
        200: {"content": {invoice_stream.MEDIA_TYPE: {}}, "description": "the event stream"},
        **responses(404, 422, 429, 503),
    },
)
async def invoice_events(
    request: Request,
    invoice_id: UUID,
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> StreamingResponse:
    client = ratelimit.client_id(request)
    return await invoice_stream.response(request.app, invoice_id, last_event_id, client)


@router.post(
    "/verify-payment",
    summary="What the ledger knows about a transaction",
    dependencies=[Depends(ratelimit.limit("verify-payment"))],
    responses=responses(400, 413, 422, 429, 503),
)
async def verify_payment(request: Request, body: VerifyRequest) -> dict[str, Any]:
    s = _settings(request)
    tx_hash = chains.normalise_tx_hash(body.chain, body.tx_hash)
    rows = await lookup.payments_for(_pool(request), body.chain, tx_hash)
    return lookup.verify(s, body.chain, tx_hash, rows)


@router.post(
    "/generate-token",
    status_code=201,
    response_model=TokenIssued,
    summary="Claim the one access token a payment buys (proof of payer required)",
    dependencies=[Depends(ratelimit.limit("generate-token"))],
    responses=responses(400, 403, 404, 409, 413, 422, 429, 503),
)
async def generate_token(request: Request, body: ClaimRequest) -> dict[str, Any]:
    s, pool = _settings(request), _pool(request)
    if body.invoice_id is not None and body.claim_secret is not None:
        return await lookup.claim_by_invoice(pool, s, body.invoice_id, body.claim_secret)
    assert body.chain is not None and body.tx_hash is not None and body.signature is not None
    clients: Clients = request.app.state.clients
    return await lookup.claim_by_signature(
        pool, s, clients, body.chain, body.tx_hash, body.signature, body.log_index
    )


@router.get(
    "/tokens/me",
    response_model=TokenStatus,
    summary="Remaining calls and expiry of your token (free)",
    responses=responses(401, 404, 503),
)
async def token_status(
    request: Request,
    x_payment_token: Annotated[str | None, Header(alias=payment_required.TOKEN_HEADER)] = None,
) -> dict[str, Any]:
    if not x_payment_token:
        raise ApiError(
            401,
            "token_missing",
            f"no {payment_required.TOKEN_HEADER} header",
            "send the token POST /x402/generate-token returned",
        )
    try:
        row = await _pool(request).fetchrow(
            db.q("api_token_status"), paywall.token_hash(x_payment_token)
        )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if row is None:
        raise ApiError(
            404,
            "token_unknown",
            "this token is unknown",
            "check the token; buy one via POST /x402/invoices",
        )
    return {
        "token_id": row["id"],
        "requests_total": row["requests_total"],
        "remaining": row["remaining"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "active": bool(row["alive"]) and row["remaining"] > 0 and not row["suspended_reason"],
        "expired": not row["alive"],
        "suspended": row["suspended_reason"],
    }
