"""The screening judgement: the rules that fire for one payment, and why (issue 16).

Pure: the caller gathers the facts (addresses that moved the money, the oracle's
answers fetched before the transaction) and the ledger turns a verdict that fired
into ``held``. A verdict is not a black box: each rule that fired says why, with a
weight; the score is their sum, capped at 100. Any rule firing holds the payment:
the score orders the review queue, it does not decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from watcher import money

# Who moved the money. EVM: the Transfer log's `from` and the transaction's sender
# (a payment routed through a contract must not escape a check on `from` alone).
# Solana: the source token account's owner and the transaction's fee payer.
Role = Literal["from", "tx_sender", "source_owner", "fee_payer"]

DEFAULT_MAX_AGE = timedelta(days=7)
WEIGHTS: Mapping[str, int] = {
    "denylist": 100,
    "sanctions_oracle": 100,
    "oracle_unanswered": 50,
    "sender_unknown": 50,
    "amount_review": 30,
    "payment_age": 30,
}


class AddressList(Protocol):
    """Where an address is listed (the deny-list file)."""

    def lookup(self, address: str) -> str | None:
        """The listing that names ``address`` (e.g. its source and entry), or None."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What the screen is told about one payment."""

    chain: str
    amount: int  # base units
    block_time: datetime | None
    first_seen: datetime
    addresses: tuple[tuple[Role, str], ...] = ()
    # Roles the screen needed but the follower could not learn (e.g. a transaction
    # sender the node did not return): the payment is held, not credited.
    missing: tuple[Role, ...] = ()
    # The sanctions oracle's answers, address -> sanctioned (None: it could not be
    # asked or did not answer). None as a whole: no oracle on this chain.
    oracle: Mapping[str, bool | None] | None = None
    payment_id: int | None = None


@dataclass(frozen=True, slots=True)
class Fired:
    """One rule that fired, with its weight and the sentence explain shows."""

    rule: str
    why: str
    address: str | None = None

    @property
    def weight(self) -> int:
        return WEIGHTS[self.rule]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The rules that fired for one payment (none: it may be credited)."""

    fired: tuple[Fired, ...] = ()
    checked: tuple[str, ...] = ()  # the rules that were evaluated

    @property
    def hold(self) -> bool:
        return bool(self.fired)

    @property
    def score(self) -> int:
        return min(100, sum(f.weight for f in self.fired))

    @property
    def reason(self) -> str | None:
        """One line for ``payments.reason``: every rule's why, in order."""
        return "; ".join(f.why for f in self.fired) or None

    def as_json(self) -> dict[str, Any]:
        """What ``payments.risk`` stores and explain and the admin API show."""
        return {
            "score": self.score,
            "rules": [
                {"rule": f.rule, "weight": f.weight, "why": f.why, "address": f.address}
                for f in self.fired
            ],
            "checked": list(self.checked),
        }


@dataclass(frozen=True)
class Screen:
    """The operator's screening settings; ``judge`` applies them to one payment."""

    hold_above: int | None = None  # base units; a payment above it is held for review
    max_age: timedelta | None = DEFAULT_MAX_AGE  # first seen this long after its block
    denylist: AddressList | None = None
    oracle_chains: frozenset[str] = field(default_factory=frozenset)

    def needs_addresses(self, chain: str) -> bool:
        """Whether a follower must learn every address that moved the money on ``chain``."""
        return self.denylist is not None or chain in self.oracle_chains

    def claim_cutoff(self, now: datetime) -> datetime | None:
        """A credited payment whose block is older than this can no longer be claimed."""
        return None if self.max_age is None else now - self.max_age

    def judge(self, facts: Facts) -> Verdict:
        """The rules that fire for ``facts``, in a fixed order."""
        fired: list[Fired] = []
        checked: list[str] = []
        if self.denylist is not None:
            checked.append("denylist")
            for role, address in facts.addresses:
                listed = self.denylist.lookup(address)
                if listed is not None:
                    fired.append(Fired("denylist", f"{role} {address} is on {listed}", address))
        if facts.chain in self.oracle_chains:
            checked.append("sanctions_oracle")
            fired += _oracle(facts)
        if self.needs_addresses(facts.chain):
            fired += [
                Fired("sender_unknown", f"the {role} address could not be learned to screen it")
                for role in facts.missing
            ]
        if self.hold_above is not None:
            checked.append("amount_review")
            if facts.amount > self.hold_above:
                fired.append(
                    Fired(
                        "amount_review",
                        f"{money.usd(facts.amount)} USDC is above the review threshold of "
                        f"{money.usd(self.hold_above)} USDC",
                    )
                )
        if self.max_age is not None:
            checked.append("payment_age")
            late = _late(facts, self.max_age)
            if late is not None:
                fired.append(Fired("payment_age", late))
        return Verdict(tuple(fired), tuple(checked))


def _oracle(facts: Facts) -> list[Fired]:
    answers = facts.oracle or {}
    out: list[Fired] = []
    for role, address in facts.addresses:
        answer = answers.get(address)
        if answer is True:
            out.append(
                Fired("sanctions_oracle", f"{role} {address} is sanctioned (oracle)", address)
            )
        elif answer is None:
            out.append(
                Fired(
                    "oracle_unanswered",
                    f"the sanctions oracle gave no answer for {role} {address}",
                    address,
                )
            )
    return out


def _late(facts: Facts, max_age: timedelta) -> str | None:
    if facts.block_time is None:
        return None
    age = facts.first_seen - facts.block_time
    if age <= max_age:
        return None
    return (
        f"first seen {age.days} days after its block (more than {max_age.days}: "
        "X402_MAX_PAYMENT_AGE_DAYS)"
    )


_current = Screen()


def install(screen: Screen) -> None:
    """Make ``screen`` the process's screen (the daemon and the API, at start)."""
    global _current
    _current = screen


def current() -> Screen:
    """The process's screen: the one installed, else the defaults (the age rule only)."""
    return _current
