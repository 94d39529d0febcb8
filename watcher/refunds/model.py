"""What a refund is: its states and kinds, and how much of a payment is still refundable.

Pure functions (no I/O), so the arithmetic is tested on its own. Money is integer base
units; calls are the calls of the payment's access token at ``price`` base units each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

# The payment states a refund may start from: credited or claimed money, and a held
# payment once an operator rejected it (a held one must be rejected first). The one
# place this list is written.
REFUNDABLE_STATES: Final = ("credited", "claimed", "rejected")
KINDS: Final = ("whole", "unconsumed", "excess")
Status = Literal["requested", "signed", "sent", "exported", "confirmed", "failed"]
STATUSES: Final = get_args(Status)
# Statuses the sender still acts on (sign, re-check); 'exported' waits for the follower.
SENDER_DUE: Final = ("requested", "signed", "sent")
PROOFS: Final = ("source", "signature", "claim_secret")


class Refused(Exception):
    """A refund that must not happen (or not like this): a 4xx with the fix."""

    def __init__(self, status: int, code: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fix = status, code, message, fix


@dataclass(frozen=True, slots=True)
class Paid:
    """A payment as the refund sees it, with what earlier refunds took."""

    amount: int
    invoice_amount: int | None  # the invoice's exact amount, when it paid one
    token_total: int | None  # the token's calls, None while no token was claimed
    token_remaining: int | None
    token_calls_refunded: int  # calls earlier refunds took from the token
    refunded: int  # money of earlier refunds, but a failed one known to have moved nothing
    price: int  # base units a call
    # Consumed whole by the x402 call(s) it paid for (claimed without a token): it bought
    # what it paid, at the route's price, so none of it is refundable.
    served: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What one refund sends and voids."""

    amount: int
    calls: int  # calls voided
    from_token: bool  # the calls come off the existing token now (else off a later claim)


def consumed_calls(p: Paid) -> int:
    """Calls the token served (not counting the ones earlier refunds took back)."""
    if p.token_total is None or p.token_remaining is None:
        return 0
    return p.token_total - p.token_remaining - p.token_calls_refunded


def refundable(p: Paid) -> int:
    """Money still refundable: paid, less what was served, less earlier refunds."""
    if p.served:
        return 0
    return max(p.amount - consumed_calls(p) * p.price - p.refunded, 0)


def excess(p: Paid) -> int:
    """An over-payment's excess: above the invoice's amount, or (without an invoice) the
    part below one call that buys nothing."""
    if p.invoice_amount is not None:
        return max(p.amount - p.invoice_amount, 0)
    return p.amount % p.price


def plan(kind: str, p: Paid) -> Plan:
    """The refund ``kind`` of payment ``p``; :class:`Refused` when there is nothing to give."""
    left = refundable(p)
    has_token = p.token_remaining is not None
    if kind == "whole":
        calls = p.token_remaining if has_token else p.amount // p.price
        return _checked(Plan(left, int(calls or 0), has_token), left)
    if kind == "unconsumed":
        if not has_token:
            raise Refused(
                409,
                "no_token",
                "the payment bought no token yet, so nothing of it is unconsumed",
                "refund it whole (kind whole)",
            )
        remaining = int(p.token_remaining or 0)
        return _checked(Plan(min(remaining * p.price, left), remaining, True), left)
    if kind == "excess":
        extra = min(excess(p), left)
        calls = p.amount // p.price - (p.amount - extra) // p.price
        if has_token and calls > int(p.token_remaining or 0):
            raise Refused(
                409,
                "excess_consumed",
                f"the excess bought {calls} calls and the token has {p.token_remaining} left",
                "refund the unconsumed part instead (kind unconsumed)",
            )
        return _checked(Plan(extra, calls, has_token), left)
    raise Refused(422, "invalid_kind", f"unknown refund kind {kind!r}", f"use one of {KINDS}")


def _checked(made: Plan, left: int) -> Plan:
    if made.amount <= 0:
        raise Refused(
            409,
            "nothing_refundable",
            f"nothing of this payment is refundable this way ({left} base units left in all)",
            "list the payment's refunds, or choose another kind",
        )
    assert made.amount <= left  # never more than what is left: the backstop
    return made
