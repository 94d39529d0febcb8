"""The ledger's answer about a transaction, and the claim flows built on it (no RPC).

``verify(...)`` says what the followers recorded for a hash and what the payer
should do next; ``claim_by_signature`` / ``claim_by_invoice`` check the proof
and hand over to :func:`api.claims.issue_token`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from api import chains, claims
from api.errors import DB_ERRORS, ApiError, service_unavailable
from api.x402.clients import Clients
from watcher import db, metrics, money
from watcher.screening import core
from watcher.settings import Settings

NEXT_STEP = {
    "credited": "claim a token: POST /x402/generate-token with a signature over claim_message "
    "from the sending wallet (or your invoice's claim_secret)",
    "pending": "wait for confirmations, then ask again",
    "claimed": "a token was already issued for this payment; use it",
    "orphaned": "the block holding this transfer left the canonical chain; it will be "
    "credited if the transfer is mined again, else pay again",
    "reorged": "this payment was credited, then its block left the canonical chain: it buys "
    "nothing, and a token it bought is suspended, until the same transfer is mined again and "
    "confirmed (then ask again)",
    "held": "this payment is held for review (see reason): an operator will release it "
    "(then claim) or reject it; ask again later or contact the merchant",
    "rejected": "this payment was rejected after review (see reason): it buys nothing; the "
    "merchant's operator can refund it",
    "below_minimum": "the amount is below the minimum payment; it buys no calls",
    "not_ours": "this transfer does not count here (invalidated or not to our address)",
    "not_found": "not seen yet: check the chain and hash, wait for the transaction to be "
    "mined, then ask again",
}


async def payments_for(pool: db.Pool, chain: str, tx_hash: str) -> list[asyncpg.Record]:
    try:
        return list(await pool.fetch(db.q("api_payments_by_tx"), chain, tx_hash))
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc


def _public_state(row: asyncpg.Record) -> str:
    """The state a payer sees: a credited payment off the canonical chain is 'reorged'."""
    state: str = row["state"]
    if state in ("credited", "claimed") and row["reorged_after_credit"]:
        return "reorged"
    return "pending" if state == "observed" else state


def describe(settings: Settings, row: asyncpg.Record) -> dict[str, Any]:
    """One payment as the payer should see it."""
    info = chains.chain_info(settings, row["chain"])
    out: dict[str, Any] = {
        "payment_id": row["id"],
        "log_index": row["log_index"],
        "status": _public_state(row),
        "from": row["from_address"],
        "amount": money.units_text(row["amount"]),
        "requests": int(row["amount"]) // settings.price_per_call_units,
        "block": row["block_number"],
        "token_id": row["token_id"],
        "reason": row["reason"],
        "invoice_id": row["invoice_id"],
    }
    if row["state"] == "observed" and info.confirmations is not None:
        head = row["head"]
        have = (
            0 if head is None else max(0, min(head - row["block_number"] + 1, info.confirmations))
        )
        out["confirmations"] = {"have": have, "need": info.confirmations}
    elif row["state"] == "observed":
        out["confirmations"] = {"commitment": info.commitment}
    cutoff = core.current().claim_cutoff(datetime.now(UTC))
    if row["state"] == "credited" and cutoff is not None and row["paid_at"] < cutoff:
        # The age rule's second half (issue 16): too old to claim; the operator refunds it.
        out["warning"] = (
            "this payment's block is older than the claim limit (X402_MAX_PAYMENT_AGE_DAYS): "
            "it can no longer be claimed; the merchant's operator can refund it"
        )
    if row["reorged_after_credit"]:
        out["warning"] = (
            "the block of this credited payment later left the canonical chain: it buys "
            "nothing, and its token is suspended, until the transfer is included again and "
            "confirmed"
        )
        if row["relanded_at"] is not None:
            out["warning"] += f" (seen again in block {row['block_number']}, not yet confirmed)"
    return out


def verify(
    settings: Settings, chain: str, tx_hash: str, rows: list[asyncpg.Record]
) -> dict[str, Any]:
    """The answer to POST /x402/verify-payment."""
    payments = [describe(settings, r) for r in rows]
    order = [
        "credited",
        "pending",
        "held",
        "claimed",
        "reorged",
        "orphaned",
        "rejected",
        "below_minimum",
        "not_ours",
    ]
    states = {p["status"] for p in payments}
    status = next((s for s in order if s in states), "not_found")
    metrics.PAYMENT_VERIFICATIONS.labels(status).inc()
    out: dict[str, Any] = {
        "chain": chain,
        "tx_hash": tx_hash,
        "status": status,
        "next": NEXT_STEP[status],
        "payments": payments,
    }
    if status == "credited":
        out["claim_message"] = claims.claim_message(chain, tx_hash)
    return out


def _refusal(settings: Settings, rows: list[asyncpg.Record]) -> ApiError:
    """Why none of these payments (all from the signer) can be claimed now."""
    if any(r["reorged_after_credit"] for r in rows):
        return claims.reorged_refusal()
    by_state = {r["state"]: r for r in rows}
    for held in ("held", "rejected"):
        if held in by_state:
            return claims.review_refusal(held, by_state[held]["reason"])
    if "claimed" in by_state:
        return claims.already_claimed(by_state["claimed"]["token_id"], "this payment")
    if "observed" in by_state:
        shown = describe(settings, by_state["observed"])
        return ApiError(
            409,
            "not_confirmed",
            "this payment is not confirmed yet",
            "wait for confirmations and claim again",
            headers={"Retry-After": "15"},
            confirmations=shown.get("confirmations"),
        )
    state = rows[0]["state"]
    return ApiError(409, f"payment_{state}", f"this payment is {state}", NEXT_STEP[state])


async def claim_by_signature(
    pool: db.Pool,
    settings: Settings,
    clients: Clients,
    chain: str,
    tx_hash: str,
    signature: str,
    log_index: int | None,
) -> dict[str, Any]:
    """Claim the payment of ``tx_hash`` for whoever proves they sent it (a contract wallet
    is asked through ``clients``)."""
    normalised = chains.normalise_tx_hash(chain, tx_hash)
    rows = await payments_for(pool, chain, normalised)
    if log_index is not None:
        rows = [r for r in rows if r["log_index"] == log_index]
    if not rows:
        metrics.PAYMENT_VERIFICATIONS.labels("not_found").inc()
        raise ApiError(
            404,
            "payment_not_found",
            "no payment to us is recorded for this hash",
            NEXT_STEP["not_found"],
        )
    senders = sorted({r["from_address"] for r in rows if r["from_address"]})
    signer = await claims.signer_among(clients, chain, normalised, senders, signature)
    if signer is None:
        metrics.PAYMENT_VERIFICATIONS.labels("bad_signature").inc()
        raise ApiError(
            403,
            "signature_mismatch",
            "the signature does not prove control of the address that sent this payment",
            "sign claim_message (from POST /x402/verify-payment) with the sending wallet: "
            "personal_sign (EIP-191) or your contract wallet (EIP-1271) on EVM, ed25519 on Solana",
            claim_message=claims.claim_message(chain, normalised),
        )
    mine = [r for r in rows if r["from_address"] == signer]
    claimable = [r for r in mine if r["state"] == "credited" and not r["reorged_after_credit"]]
    if not claimable:
        raise _refusal(settings, mine)
    metrics.PAYMENT_VERIFICATIONS.labels("claimed").inc()
    return await claims.issue_token(pool, settings, claimable[0]["id"])


async def claim_by_invoice(
    pool: db.Pool, settings: Settings, invoice_id: UUID, secret: str
) -> dict[str, Any]:
    """Claim the payment linked to an invoice, for whoever holds its secret."""
    try:
        inv = await pool.fetchrow(db.q("api_invoice"), invoice_id)
    except DB_ERRORS as exc:
        raise service_unavailable("the database") from exc
    if inv is None or not claims.secret_matches(secret, inv["claim_secret_hash"]):
        # One answer for both: an unknown id and a wrong secret look the same.
        metrics.PAYMENT_VERIFICATIONS.labels("bad_secret").inc()
        raise ApiError(
            403,
            "invalid_claim_secret",
            "no invoice with this id and secret",
            "send the invoice_id and claim_secret exactly as POST /x402/invoices returned them",
        )
    if inv["status"] == "claimed" or inv["token_id"] is not None:
        raise claims.already_claimed(inv["token_id"], "this invoice")
    if inv["status"] != "credited" or inv["payment_id"] is None:
        raise ApiError(
            409,
            "invoice_not_credited",
            f"this invoice is {inv['status']}, not paid",
            "pay the exact amount to pay_to, wait for confirmations (GET "
            f"/x402/invoices/{invoice_id}), then claim again",
            headers={"Retry-After": "15"},
        )
    metrics.PAYMENT_VERIFICATIONS.labels("claimed").inc()
    return await claims.issue_token(pool, settings, inv["payment_id"])
