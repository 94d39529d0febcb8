"""Refunds and disputes: a payment that went back ends the access it bought.

Stripe keeps saying ``active`` for a subscription whose invoice was refunded
or charged back, so a reversal is not a subscription status here: it is a row
per charge (``stripe_charges``) that holds access off for the billing period
it is anchored to, checked by the metering statement itself
(``stripe_reversal``). Later ``customer.subscription.updated`` or
``invoice.payment_succeeded`` events of that period cannot lift it; a won
dispute can, and so can the subscription being active in a later period (a new
invoice was paid).

* ``charge.refunded``: a full refund reverses the charge; a partial refund is
  recorded and changes nothing (docs/stripe.md says why).
* ``charge.dispute.*``: any dispute not won reverses the charge from the moment
  it is opened, since Stripe takes the money back then; ``closed`` with status
  ``won`` (or ``warning_closed``) and ``funds_reinstated`` restore it.

A charge is tied to its subscription through its invoice, by whichever of
the charge's ``invoice``, the invoice's payments or an ``invoice_payment.paid``
event arrives; whatever arrives last completes the link
(``stripe_link_charges``), so no delivery order leaves access on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Literal

import structlog

from watcher import db

log = structlog.get_logger(__name__)

Obj = Mapping[str, Any]
Applied = bool | Literal["unmatched"]

CHARGE_EVENTS = ("charge.refunded",)
DISPUTE_EVENTS = (
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)
_CLOSED = ("won", "lost", "warning_closed")


def _ref(value: Any) -> str | None:
    """Stripe sends a related object either as its id or expanded."""
    if isinstance(value, Mapping):
        return str(value["id"])
    return str(value) if value else None


def invoice_payments(inv: Obj) -> Iterator[tuple[str | None, str | None]]:
    """``(payment intent, charge)`` pairs an invoice names, in any API version's shape."""
    legacy = (_ref(inv.get("payment_intent")), _ref(inv.get("charge")))
    if legacy != (None, None):
        yield legacy
    for paid in (inv.get("payments") or {}).get("data") or []:
        payment = paid.get("payment") or {}
        pair = (_ref(payment.get("payment_intent")), _ref(payment.get("charge")))
        if pair != (None, None):
            yield pair


async def record_invoice_payments(conn: db.Connection, invoice_id: str, inv: Obj) -> None:
    for intent, charge in invoice_payments(inv):
        await conn.execute(db.q("stripe_record_invoice_payment"), invoice_id, intent, charge)


async def link(conn: db.Connection) -> None:
    """Tie every charge still waiting for its invoice or subscription, if both are known now."""
    await conn.fetch(db.q("stripe_link_charges"))


async def _settle(conn: db.Connection, charge_id: str) -> Applied:
    await link(conn)
    row = await conn.fetchrow(db.q("stripe_charge_reversal"), charge_id)
    if row is None or row["subscription_id"] is None:
        # A one-off payment, or an invoice not delivered yet: kept, and applied
        # by stripe_link_charges when the invoice (or its payment) arrives.
        log.info("stripe_charge_unmatched", charge=charge_id, reason="no known invoice")
        return "unmatched"
    if row["revoked_reason"] is not None:
        log.warning(
            "stripe_access_reversed",
            charge=charge_id,
            subscription=row["subscription_id"],
            reason=row["revoked_reason"],
        )
    return True


async def apply_charge(conn: db.Connection, charge: Obj) -> Applied:
    """A refund on a charge: a full one reverses it, a partial one is only recorded."""
    amount = int(charge["amount"]) if charge.get("amount") is not None else None
    refunded = int(charge.get("amount_refunded") or 0)
    full = bool(charge.get("refunded")) or (amount is not None and 0 < amount <= refunded)
    invoice = _ref(charge.get("invoice"))
    intent = _ref(charge.get("payment_intent"))
    await conn.execute(
        db.q("stripe_upsert_charge"), charge["id"], intent, invoice, amount, refunded, full
    )
    if invoice:
        await conn.execute(db.q("stripe_record_invoice_payment"), invoice, intent, charge["id"])
    return await _settle(conn, str(charge["id"]))


async def apply_dispute(
    conn: db.Connection, event_type: str, created: datetime, dispute: Obj
) -> Applied:
    """A dispute's state on its charge; reinstated funds count as a won dispute."""
    charge = _ref(dispute["charge"])
    if charge is None:
        raise ValueError("a dispute without its charge")
    status = str(dispute["status"])
    if event_type == "charge.dispute.funds_reinstated" and status not in _CLOSED:
        status = "won"  # Stripe gave the money back to us: as good as won
    await conn.execute(
        db.q("stripe_upsert_charge"),
        charge,
        _ref(dispute.get("payment_intent")),
        None,
        None,
        0,
        False,
    )
    await conn.fetchrow(db.q("stripe_upsert_dispute"), dispute["id"], charge, status, created)
    return await _settle(conn, charge)


async def apply_invoice_payment(conn: db.Connection, paid: Obj) -> Applied:
    """``invoice_payment.paid``: the newer API versions' link from a payment to its invoice."""
    payment = paid.get("payment") or {}
    invoice = _ref(paid["invoice"])
    if invoice is None:
        raise ValueError("an invoice payment without its invoice")
    intent, charge = _ref(payment.get("payment_intent")), _ref(payment.get("charge"))
    if intent is None and charge is None:
        return False  # paid out of band: nothing a charge event could name
    await conn.execute(db.q("stripe_record_invoice_payment"), invoice, intent, charge)
    await link(conn)
    return True
