"""Invoices: the safe way to pay. The follower's credit finds the invoice, not the payer.

* EVM: the amount identifies the invoice. It is ``requests x price`` plus a
  few micro-dollars (1 to ``AMOUNT_JITTER`` base units, never below the
  price and always less than one more call). An amount is held from the
  invoice's creation until ``ledger.INVOICE_AMOUNT_HOLD`` after it expires
  (least recently used amounts first), so a late payment cannot pay someone
  else's invoice; when all are held the answer is 503 ``no_free_amount``.
* Solana: a fresh reference key (a random ed25519 public key nobody holds)
  goes into the Solana Pay URL; the wallet adds it to the transfer and the
  follower records it in ``payments.reference_keys``.
* The ``claim_secret`` is returned once; the database keeps its SHA-256.

Matching happens in ``watcher.ledger.credit`` (query ``link_invoices``) in the
follower's own transaction; see docs/api.md for the late/over/under policy.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import asyncpg
from solders.keypair import Keypair

from api import chains
from api.errors import DB_ERRORS, ApiError, service_unavailable
from watcher import db, keys, ledger, metrics, money, networks
from watcher.settings import Settings

INVOICE_LIFETIME = timedelta(minutes=30)
AMOUNT_JITTER = 9_999  # at most ~1 cent over the price, never a whole extra call
INSERT_ATTEMPTS = 3


def solana_pay_url(owner: str, amount: int, mint: str, reference: str) -> str:
    """A Solana Pay transfer request; the amount is in USDC (not base units)."""
    amount_text = money.token_amount(amount)
    query = urlencode(
        {
            "amount": amount_text,
            "spl-token": mint,
            "reference": reference,
            "label": "x402 access",
            "message": "USDC payment for API calls",
        }
    )
    return f"solana:{owner}?{query}"


def requested_units(settings: Settings, requests: int | None, amount_usd: Decimal | None) -> int:
    """The base amount asked for, validated against price and minimum (4xx otherwise)."""
    price = settings.price_per_call_units
    if requests is not None:
        units = requests * price
    else:
        assert amount_usd is not None
        try:
            units = money.usd_to_units(amount_usd)
        except ValueError as exc:
            raise ApiError(
                422,
                "invalid_amount",
                "amount_usd has more than 6 decimal places",
                "give dollars with at most 6 decimals, e.g. 1.50",
            ) from exc
        units -= units % price  # whole calls only; the rest would buy nothing
    minimum = max(settings.min_payment_units, price)
    if units < minimum:
        raise ApiError(
            422,
            "amount_too_small",
            f"an invoice must be at least ${money.usd(minimum)} (one call is ${money.usd(price)})",
            "ask for more requests or a larger amount_usd",
            minimum_usd=money.usd(minimum),
        )
    return units


async def create(pool: db.Pool, settings: Settings, chain: str, units: int) -> dict[str, Any]:
    """Open an invoice for ``units`` (base amount) on ``chain``."""
    info = chains.enabled_chain(settings, chain)
    assert info.pay_to is not None
    secret = secrets.token_urlsafe(32)
    requests = units // settings.price_per_call_units
    jitter = min(AMOUNT_JITTER, settings.price_per_call_units - 1)
    row, wait = None, None
    try:
        async with pool.acquire() as conn:
            await ledger.expire_invoices(conn)
        if networks.family(chain) == "solana":
            reference = str(Keypair().pubkey())
            row = await pool.fetchrow(
                db.q("api_insert_solana_invoice"),
                info.pay_to,
                info.asset,
                units,
                requests,
                reference,
                keys.sha256(secret),
                INVOICE_LIFETIME,
                chain,
            )
        else:
            for _ in range(INSERT_ATTEMPTS):  # a racing insert took our amount: pick again
                row = await pool.fetchrow(
                    db.q("api_insert_evm_invoice"),
                    chain,
                    info.pay_to,
                    info.asset,
                    units,
                    requests,
                    keys.sha256(secret),
                    INVOICE_LIFETIME,
                    jitter,
                    ledger.INVOICE_AMOUNT_HOLD,
                )
                if row is not None:
                    break
            if row is None:
                wait = await pool.fetchval(db.q("api_next_free_amount"), chain, units, jitter)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if row is None:
        raise _no_free_amount(chain, requests, wait)
    metrics.INVOICES_CREATED.labels(chain).inc()
    return {
        **_public(settings, row),
        "claim_secret": secret,
        "note": "keep claim_secret: it is shown once and claims the token after payment",
    }


def _no_free_amount(chain: str, requests: int, wait: int | None) -> ApiError:
    """Every amount for this many calls is held by a recent invoice (capacity: docs/api.md)."""
    retry = max(1, min(wait or 60, 3600))
    return ApiError(
        503,
        "no_free_amount",
        f"every invoice amount for {requests} calls on {chain} is held by a recent invoice "
        "(an amount stays reserved for 24 hours after its invoice expires, so a late payment "
        "can never pay someone else's invoice)",
        f"retry after {retry} s, ask for another number of calls, pay on a chain with "
        "reference keys (Solana), or pay per call with x402",
        headers={"Retry-After": str(retry)},
    )


def _public(settings: Settings, row: asyncpg.Record) -> dict[str, Any]:
    info = chains.chain_info(settings, row["chain"])
    amount = int(row["amount"])
    out: dict[str, Any] = {
        "invoice_id": str(row["id"]),
        "chain": row["chain"],
        "pay_to": info.pay_to_display if info.pay_to == row["pay_to"] else row["pay_to"],
        "asset": info.asset_display if info.asset == row["token"] else row["token"],
        "amount": money.units_text(amount),
        "amount_usd": money.usd(amount),
        "requests": amount // settings.price_per_call_units,
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "late_payments_until": row["expires_at"] + ledger.INVOICE_GRACE,
    }
    if networks.family(row["chain"]) == "solana":
        out["reference"] = row["reference"]
        out["solana_pay_url"] = solana_pay_url(
            row["pay_to"], amount, row["token"], row["reference"]
        )
        out["commitment"] = info.commitment
    else:
        out["confirmations"] = info.confirmations
        out["pay_exactly"] = "send exactly this amount: it is how the payment finds the invoice"
    return out


async def status(pool: db.Pool, settings: Settings, invoice_id: UUID) -> dict[str, Any]:
    """open | paid (k of n confirmations) | held | rejected | credited | expired | claimed |
    reorged."""
    try:
        inv = await pool.fetchrow(db.q("api_invoice"), invoice_id)
        pending = None
        if inv is not None and inv["status"] == "open":
            pending = await pool.fetchrow(
                db.q("api_invoice_pending_payment"), invoice_id, ledger.INVOICE_GRACE
            )
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if inv is None:
        raise ApiError(
            404,
            "invoice_not_found",
            "no invoice with this id",
            "create one with POST /x402/invoices",
        )
    out = _public(settings, inv)
    state = inv["status"]
    if state == "open" and pending is not None and pending["state"] != "observed":
        # Held for review at credit, or rejected (issue 16): never paid, says why.
        state = pending["state"]
        out["payment"] = {"tx_hash": pending["tx_hash"], "reason": pending["reason"]}
    elif state == "open" and pending is not None:
        state = "paid"
        out["payment"] = _pending(settings, inv["chain"], pending)
    elif state == "open" and inv["now"] > inv["expires_at"]:
        state = "expired"
    if inv["payment_id"] is not None:
        out["payment"] = {
            "tx_hash": inv["tx_hash"],
            "amount": money.units_text(inv["paid_amount"]),
            "from": inv["from_address"],
            "payment_id": inv["payment_id"],
        }
        out["requests"] = int(inv["paid_amount"]) // settings.price_per_call_units
        if inv["reorged_after_credit"]:
            # Paid, then the payment's block left the canonical chain: it pays nothing now.
            state = "reorged"
            out["payment"]["reason"] = inv["payment_reason"]
            out["token_suspended"] = inv["token_id"] is not None
    out["status"] = state
    out["token_id"] = inv["token_id"]
    return out


def _pending(settings: Settings, chain: str, pending: asyncpg.Record) -> dict[str, Any]:
    """A matching payment still short of its confirmations: k of n (or the commitment)."""
    info = chains.chain_info(settings, chain)
    if info.confirmations is None:
        return {"tx_hash": pending["tx_hash"], "confirmations": {"commitment": info.commitment}}
    head = pending["head"]
    have = 0 if head is None else head - pending["block_number"] + 1
    return {
        "tx_hash": pending["tx_hash"],
        "confirmations": {
            "have": max(0, min(have, info.confirmations)),
            "need": info.confirmations,
        },
    }
