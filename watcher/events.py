"""Events: the outbox every state change a merchant cares about is written to.

An event is written by the same transaction as the change it reports (the caller's:
a follower's converge step through ``ledger.py``, or one API request), so it commits
with the change or not at all. Its ``data`` is the resource as it is after the
change. From the outbox, deliveries go to webhook endpoints (``watcher/webhooks/``),
the feed serves pull consumers, and NOTIFY wakes both at commit.

:data:`TYPES` is the contract (docs/webhooks.md lists the same names, checked by
``tests/unit/test_events.py``). A type is ``<resource>.<what happened>``.

Every event's ``sequence`` (its number in the outbox) increases with each change of
the same resource: an event is written after its change has locked the resource's
row, so a later change of that resource gets a larger number. A receiver that gets
events out of order keeps the one with the largest sequence per resource.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal
from uuid import UUID

from watcher import db

# type -> when it is written. The first segment names the resource.
TYPES: Mapping[str, str] = {
    "payment.observed": "a transfer toward us was seen on chain, not yet confirmed",
    "payment.credited": "a payment reached its confirmations and is credited "
    "(also what a backfill writes for a transfer already deep: no `observed` first)",
    "payment.orphaned": "a payment's block left the canonical chain before it was credited",
    "payment.reorged": "a credited payment's block left the canonical chain: "
    "what it bought is suspended until it re-lands",
    "payment.relanded": "a reorged credited payment is confirmed again at its new place",
    "payment.claimed": "a credited payment was consumed: it bought a token or paid an x402 call",
    "payment.invalidated": "an operator ruled that a payment buys nothing",
    "invoice.paid": "a payment for the invoice was seen on chain, not yet confirmed",
    "invoice.credited": "the invoice's payment is credited: its token can be claimed",
    "invoice.claimed": "the invoice's token was issued",
    "invoice.expired": "the invoice expired unpaid (after the late-payment grace)",
    "token.issued": "an access token was issued for a payment",
    "token.used_up": "an access token's last call was charged",
    "x402_settlement.settled": "an x402 payment was settled on chain and its call served",
    "x402_settlement.failed": "an x402 settlement failed: the call was not served",
    "x402_settlement.reorged": "a served x402 settlement's transfer left the canonical chain",
    "subscription.activated": "a Stripe subscription started serving calls",
    "subscription.tier_changed": "a Stripe subscription moved to another tier",
    "subscription.past_due": "a Stripe subscription's payment failed (grace period running)",
    "subscription.cancelled": "a Stripe subscription ended",
    "subscription.refunded": "a Stripe charge of a subscription was refunded",
    "subscription.disputed": "a Stripe charge of a subscription was disputed",
    "webhook_endpoint.disabled": "a webhook endpoint was disabled after failing for days",
    # ---- refunds (issue 16): money sent back for a payment (docs/holds-and-refunds.md)
    "refund.requested": "an operator asked for a refund: the token it voided is already shrunk",
    "refund.sent": "a refund's signed transaction was broadcast (recorded before it was sent)",
    "refund.confirmed": "a follower saw the refund's outgoing transfer at its confirmations",
    "refund.failed": "a refund could not be sent and needs an operator's look (money unmoved)",
}

Resource = Literal["payment", "invoice", "token", "x402_settlement", "subscription"]
# The channel NOTIFY wakes the delivery worker and the feed on (payload: newest id).
CHANNEL = "watcher_events"
# The channel an invoice's changes are announced on (payload: the invoice id).
INVOICE_CHANNEL = "watcher_invoices"
# The channel a follower announces a new head on ('<chain>:<number>', query set_cursor).
HEAD_CHANNEL = "watcher_heads"


def public_id(event_id: int) -> str:
    """The id a receiver sees (``webhook-id``, the feed's ``after=``)."""
    return f"evt_{event_id}"


def parse_public_id(text: str) -> int | None:
    """The outbox number of ``evt_<n>`` (or a bare number); None if it is neither."""
    raw = text[4:] if text.startswith("evt_") else text
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def _check(type_: str, resource: str) -> None:
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}: add it to events.TYPES and the docs")
    if type_.split(".", 1)[0] != resource:
        raise ValueError(f"event type {type_!r} does not belong to resource {resource!r}")


async def payments(conn: db.Connection, type_: str, ids: Sequence[int]) -> int:
    """Write one ``type_`` event per payment id (the rows as they are now); returns how many."""
    _check(type_, "payment")
    if not ids:
        return 0
    return int(await conn.fetchval(db.q("emit_payment_events"), type_, list(ids)) or 0)


async def invoices(
    conn: db.Connection,
    type_: str,
    ids: Sequence[UUID | str],
    payment_ids: Sequence[int] = (),
) -> int:
    """Write one ``type_`` event per invoice id; returns how many.

    ``payment_ids`` (aligned with ``ids``): the payment each event is about when it is
    not linked yet (``invoice.paid``: a payment observed, not credited)."""
    _check(type_, "invoice")
    if not ids:
        return 0
    uuids = [i if isinstance(i, UUID) else UUID(str(i)) for i in ids]
    pays = list(payment_ids)
    return int(await conn.fetchval(db.q("emit_invoice_events"), type_, uuids, pays) or 0)


async def tokens(conn: db.Connection, type_: str, ids: Sequence[int]) -> int:
    """Write one ``type_`` event per access token id; returns how many."""
    _check(type_, "token")
    if not ids:
        return 0
    return int(await conn.fetchval(db.q("emit_token_events"), type_, list(ids)) or 0)


async def emit(conn: db.Connection, type_: str, resource_id: str, data: Mapping[str, Any]) -> int:
    """Write one event whose resource the caller describes (``data`` as it is now)."""
    resource = type_.split(".", 1)[0]
    _check(type_, resource)
    body = {"object": resource, "id": resource_id, **data}
    return int(
        await conn.fetchval(db.q("emit_event"), type_, resource, resource_id, json.dumps(body)) or 0
    )


# The two x402 settlement tables: EVM authorizations, Solana settlements (resource ids
# evm-<id>, svm-<id>: the tables number separately).
X402Rail = Literal["evm", "svm"]


async def x402_settlements(
    conn: db.Connection, type_: str, rail: X402Rail, ids: Sequence[int]
) -> int:
    """Write one ``type_`` event per settlement row of ``rail`` whose status now is the one
    the type names (``x402_settlement.settled`` -> 'settled'); returns how many. A row
    another transaction moved meanwhile writes nothing false."""
    _check(type_, "x402_settlement")
    if not ids:
        return 0
    evm, svm = (list(ids), []) if rail == "evm" else ([], list(ids))
    return int(await conn.fetchval(db.q("emit_x402_settlement_events"), type_, evm, svm) or 0)


async def x402_settlement_rows(conn: db.Connection, type_: str, rows: Iterable[Any]) -> int:
    """:func:`x402_settlements` for rows with ``rail`` and ``settlement_id`` columns (the
    ledger's queries return them), one call per rail present; returns how many."""
    by_rail: dict[X402Rail, list[int]] = {"evm": [], "svm": []}
    for r in rows:
        by_rail[r["rail"]].append(int(r["settlement_id"]))
    return sum([await x402_settlements(conn, type_, rail, ids) for rail, ids in by_rail.items()])


async def subscriptions(conn: db.Connection, type_: str, ids: Sequence[str]) -> int:
    """Write one ``type_`` event per Stripe subscription id (as stored now); returns how many."""
    _check(type_, "subscription")
    if not ids:
        return 0
    return int(await conn.fetchval(db.q("emit_subscription_events"), type_, list(ids)) or 0)


async def subscription_charges(conn: db.Connection, type_: str, charge_ids: Sequence[str]) -> int:
    """Write one ``type_`` event (refunded, disputed) per Stripe charge id, about the
    subscription the charge is tied to, with the charge; returns how many."""
    _check(type_, "subscription")
    if not charge_ids:
        return 0
    return int(
        await conn.fetchval(db.q("emit_subscription_charge_events"), type_, list(charge_ids)) or 0
    )
