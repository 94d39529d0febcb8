"""The refund ledger: a refund requested (token voided first, audited, evented) in one
transaction; read back by id or key; listed.

The sender's transitions (signed, sent, failed, exported) are in :mod:`watcher.refunds.evm`
and the followers' (linked, confirmed, unlinked) in :mod:`watcher.refunds.outgoing`; all of
them are statements of ``watcher/sql/refunds.sql``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from watcher import db
from watcher.refunds import model, outgoing


@dataclass(frozen=True, slots=True)
class Ask:
    """One refund request as the operator made it, its destination already judged."""

    payment_id: int
    kind: str
    reason: str
    operator: str
    refund_key: str
    destination: str
    proof: str
    price: int  # base units a call (X402_PRICE_PER_CALL)
    expect_amount: int | None = None  # the amount the payer signed for, or the operator expects
    client: str | None = None  # the request's address, for the audit


def new_key() -> str:
    """A refund key when the operator gave none (a repeat then makes a new refund)."""
    return "rf_" + secrets.token_hex(12)


async def by_key(conn: db.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(db.q("refund_by_key"), key)


async def by_id(conn: db.Connection, refund_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(db.q("refund_by_id"), refund_id)


async def listing(
    conn: db.Connection, status: str | None, chain: str | None, limit: int
) -> list[asyncpg.Record]:
    return list(await conn.fetch(db.q("refund_list"), status, chain, limit))


def same_request(row: asyncpg.Record, ask: Ask) -> bool:
    """A repeat of a refund key must ask for the same payment and kind."""
    return int(row["payment_id"]) == ask.payment_id and row["kind"] == ask.kind


def key_reused(key: str) -> model.Refused:
    return model.Refused(
        409,
        "refund_key_reused",
        f"refund key {key!r} names a refund of another payment or kind",
        "use a new refund key for a new refund (the key is the refund's identity)",
    )


async def create(conn: db.Connection, ask: Ask) -> tuple[asyncpg.Record, bool]:
    """Request the refund ``ask`` (one transaction); returns (refund, created now).

    Locks the payment, computes what is still refundable, voids or shrinks its token,
    inserts the refund (``requested``), writes the audit row and ``refund.requested``.
    A refund key seen before returns that refund and changes nothing."""
    async with conn.transaction():
        pay = await conn.fetchrow(db.q("refund_lock_payment"), ask.payment_id)
        old = await by_key(conn, ask.refund_key)  # after the lock: a racing twin committed
        if old is not None:
            if not same_request(old, ask):
                raise key_reused(ask.refund_key)
            return old, False
        if pay is None:
            raise model.Refused(
                404,
                "payment_not_found",
                f"no payment {ask.payment_id}",
                "take the id from the candidates or verify-payment",
            )
        _refundable_state(pay)
        tok = await conn.fetchrow(db.q("refund_lock_token"), ask.payment_id)
        totals = await conn.fetchrow(db.q("refund_totals"), ask.payment_id)
        assert totals is not None
        plan = model.plan(ask.kind, _paid(pay, tok, totals, ask.price))
        if ask.expect_amount is not None and ask.expect_amount != plan.amount:
            raise model.Refused(
                409,
                "amount_mismatch",
                f"this refund is {plan.amount} base units, not {ask.expect_amount}",
                f"ask (and have the payer sign) for exactly {plan.amount} base units",
            )
        token_id = None
        if plan.from_token and tok is not None:
            token_id = int(tok["id"])
            if (
                plan.calls
                and await conn.fetchrow(db.q("refund_shrink_token"), token_id, plan.calls) is None
            ):
                raise model.Refused(
                    409, "token_changed", "the token's calls changed meanwhile", "ask again"
                )
        rid = await conn.fetchval(
            db.q("refund_insert"),
            ask.refund_key,
            ask.payment_id,
            pay["chain"],
            ask.kind,
            plan.amount,
            plan.calls,
            token_id,
            pay["token"],
            ask.destination,
            ask.proof,
            ask.reason,
            ask.operator,
        )
        if rid is None:  # the same key for another payment, committed meanwhile
            raise key_reused(ask.refund_key)
        detail = {
            "kind": ask.kind,
            "amount": str(plan.amount),
            "calls": plan.calls,
            "destination": ask.destination,
            "proof": ask.proof,
        }
        await conn.fetchrow(
            db.q("refund_audit"),
            "refund.request",
            ask.payment_id,
            f"refund:{rid}",
            ask.reason,
            json.dumps(detail),
            ask.client,
            ask.operator,
        )
        await outgoing.emit(conn, "refund.requested", int(rid))
        row = await by_id(conn, int(rid))
        assert row is not None
        return row, True


def _refundable_state(pay: asyncpg.Record) -> None:
    state = pay["state"]
    if state == "held":
        raise model.Refused(
            409,
            "payment_held",
            "a held payment cannot be refunded before an operator rejects it",
            "reject it first (watcher holds reject), then refund it",
        )
    if state not in model.REFUNDABLE_STATES:
        raise model.Refused(
            409,
            "payment_not_refundable",
            f"a {state} payment holds no money of ours to give back",
            f"refund a payment that is {', '.join(model.REFUNDABLE_STATES)}",
        )
    if pay["reorged_after_credit"]:
        raise model.Refused(
            409,
            "payment_reorged",
            "the payment's block left the canonical chain: no money to return",
            "wait until it re-lands (watcher explain shows it)",
        )


def _paid(pay: Any, tok: Any, totals: Any, price: int) -> model.Paid:
    inv = pay["invoice_amount"]
    return model.Paid(
        amount=int(pay["amount"]),
        invoice_amount=int(inv) if inv is not None else None,
        token_total=int(tok["requests_total"]) if tok is not None else None,
        token_remaining=int(tok["remaining"]) if tok is not None else None,
        token_calls_refunded=int(totals["token_calls"]),
        refunded=int(totals["refunded"]),
        price=price,
        # claimed without a token: an x402 call was served for it (ledger.claim_served);
        # linked to a settling x402 settlement: its call is being served
        served=(pay["state"] == "claimed" and tok is None) or bool(pay["x402_linked"]),
    )


def public(row: asyncpg.Record) -> dict[str, Any]:
    """A refund as the API and CLI show it (money as exact strings)."""
    keep = (
        "id",
        "refund_key",
        "payment_id",
        "chain",
        "kind",
        "calls",
        "token",
        "destination",
        "proof",
        "status",
        "reason",
        "requested_by",
        "wallet",
        "nonce",
        "tx_hash",
        "out_tx_hash",
        "out_log_index",
        "out_block_number",
        "failure",
        "last_error",
        "created_at",
        "signed_at",
        "sent_at",
        "exported_at",
        "confirmed_at",
        "failed_at",
        "payment_tx_hash",
        "payment_log_index",
    )
    out: dict[str, Any] = {k: row[k] for k in keep}
    out["amount"] = str(int(row["amount"]))
    return out


# ---- the sender's transitions (every family's sender uses these) ---------------------------


async def due(pool: db.Pool, chain: str, statuses: Sequence[str], limit: int) -> list[int]:
    """Ids of ``chain``'s refunds in ``statuses``, oldest first, at most ``limit``."""
    rows = await pool.fetch(db.q("refund_due"), chain, list(statuses), limit)
    return [int(r["id"]) for r in rows]


async def lock_requested(conn: db.Connection, refund_id: int) -> asyncpg.Record | None:
    """The refund, locked, while it is still ``requested`` (None: another signer has it)."""
    return await conn.fetchrow(db.q("refund_lock_requested"), refund_id)


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a refund must not be signed or exported now; ``final``: never (fail it)."""

    why: str
    final: bool


async def blocked(conn: db.Connection, refund_id: int) -> Blocked | None:
    """Whether the refund's payment still holds money of ours, checked again when it is
    signed or exported (it was requested earlier: the payment may have been reorged out
    or invalidated since). Share-locks the payment for the caller's transaction."""
    pay = await conn.fetchrow(db.q("refund_payment_standing"), refund_id)
    if pay is None:
        return Blocked(f"refund {refund_id} or its payment is gone", True)
    if pay["state"] not in model.REFUNDABLE_STATES:
        return Blocked(
            f"payment {pay['id']} became {pay['state']} after the refund was requested: "
            "it holds no money of ours to give back (never sent)",
            True,
        )
    if pay["reorged_after_credit"]:
        return Blocked(
            f"payment {pay['id']} was reorged out after the refund was requested: not sent "
            "until it re-lands and is confirmed again",
            False,
        )
    return None


async def lock_wallet(conn: db.Connection, chain: str, wallet: str) -> None:
    """One signer per (chain, wallet) until the caller's transaction ends."""
    await conn.execute(db.q("refund_wallet_lock"), chain, wallet)


async def next_nonce(conn: db.Connection, chain: str, wallet: str) -> int:
    """The wallet's next nonce by our records (under :func:`lock_wallet`)."""
    return int(await conn.fetchval(db.q("refund_next_nonce"), chain, wallet))


async def mark_signed(
    conn: db.Connection,
    refund_id: int,
    *,
    wallet: str,
    nonce: int | None,
    raw_tx: str,
    tx_hash: str,
    detail: Mapping[str, Any],
) -> bool:
    """Record the signed transaction (the caller commits it BEFORE broadcasting)."""
    got = await conn.fetchval(
        db.q("refund_mark_signed"), refund_id, wallet, nonce, raw_tx, tx_hash, json.dumps(detail)
    )
    return got is not None


async def mark_sent(pool: db.Pool, refund_id: int) -> bool:
    """signed -> sent (the node took it), with ``refund.sent``; False if it was not signed."""
    async with pool.acquire() as conn, conn.transaction():
        got = await conn.fetchval(db.q("refund_mark_sent"), refund_id)
        if got is not None:
            await outgoing.emit(conn, "refund.sent", refund_id)
    return got is not None


async def mark_failed(
    pool: db.Pool, refund_id: int, why: str, *, moved_nothing: bool = False
) -> bool:
    """-> failed with ``why`` and ``refund.failed``: an operator must look (never re-signed).

    ``moved_nothing``: known for sure (never signed, or a reverted receipt); only then is
    its amount refundable again. Otherwise it may yet have landed, and stays counted."""
    async with pool.acquire() as conn, conn.transaction():
        got = await conn.fetchval(db.q("refund_mark_failed"), refund_id, why[:500], moved_nothing)
        if got is not None:
            await outgoing.emit(conn, "refund.failed", refund_id)
    return got is not None


async def note_error(pool: db.Pool, refund_id: int, error: str) -> None:
    """A transient problem (RPC down, no gas yet): kept for the operator, retried."""
    await pool.execute(db.q("refund_note_error"), refund_id, error[:500])


async def mark_exported(
    conn: db.Connection, refund_id: int, wallet: str, *, nonce: int | None = None
) -> bool:
    """requested -> exported (handed to an outside signer as ``wallet``); the nonce of the
    exported transaction is kept from the first export on."""
    got = await conn.fetchval(db.q("refund_mark_exported"), refund_id, wallet, nonce)
    return got is not None


async def exportable(
    pool: db.Pool, chain: str, refund_id: int, fmt: str, formats: Sequence[str]
) -> asyncpg.Record:
    """The refund an exporter of ``chain`` may export as ``fmt``, or :class:`model.Refused`:
    a format it does not write (422), no such refund there (404), or one already past the
    point where an outside signer may take it (409)."""
    if fmt not in formats:
        raise model.Refused(
            422,
            "invalid_format",
            f"{chain} exports {tuple(formats)}, not {fmt!r}",
            "ask for format=" + " or format=".join(formats),
        )
    row = await pool.fetchrow(db.q("refund_by_id"), refund_id)
    if row is None or row["chain"] != chain:
        raise model.Refused(
            404,
            "refund_not_found",
            f"no refund {refund_id} on {chain}",
            "list the refunds (GET /x402/admin/refunds)",
        )
    if row["status"] not in ("requested", "exported"):
        raise model.Refused(
            409,
            "not_exportable",
            f"refund {refund_id} is {row['status']}",
            "only a requested (or already exported) refund is exported",
        )
    async with pool.acquire() as conn:  # requested earlier: still backed by its payment?
        stop = await blocked(conn, refund_id)
    if stop is not None:
        raise model.Refused(409, "payment_not_refundable", stop.why, "watcher explain its payment")
    return row
