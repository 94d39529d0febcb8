"""The one data model of ``watcher explain``: what EVM and Solana explainers both fill.

A :class:`Report` is a list of transactions, each with the token movements the
follower would judge and the verdict it would give. The JSON form is the same
for every network family::

    {"chain": NAME,
     "transactions": [{"tx": HASH_OR_SIGNATURE, "status": "success" | "failed" | "unknown",
                       "transfers": [{"log_index": INDEX, "token": CONTRACT_OR_MINT,
                                      "from": PAYER, "to": RECEIVER,
                                      "amount": "BASE_UNITS", "verdict": VERDICT,
                                      "state": LEDGER_STATE,      # when the ledger was read
                                      "reason": LEDGER_REASON,    # when the ledger has one
                                      "confirmations": N,         # EVM, when known
                                      "events": [EVENT, ...],     # when the ledger was read
                                      "tx_sender": SENDER,        # when learned
                                      "risk": {"score": N, "rules": [...], "checked": [...]},
                                      "review": {"by": OPERATOR, "at": TIME, "note": TEXT}}]}],
     "credit_total": "BASE_UNITS",
     "notes": [...]}                                              # only when there are any

``log_index`` is the ledger's key within the transaction: the log index on
EVM, the index of the receiving token account on Solana. Amounts are base
units as plain integer strings (:func:`watcher.money.units_text`); the human
view shows dollars by the same rule everywhere (:func:`watcher.money.usd`).
Optional fields are left out, not null, when unknown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from watcher import money


@dataclass
class Transfer:
    """One token movement and the follower's verdict on it."""

    index: int  # EVM log index; Solana account index (-1: not in the account keys)
    token: str | None
    from_address: str | None
    to_address: str | None
    amount: int
    verdict: str
    block: int | None = None  # block number (EVM) or slot (Solana)
    state: str | None = None  # the ledger's state, when the database was read
    reason: str | None = None  # the ledger's reason, when it has one
    confirmations: int | None = None
    # The events the ledger wrote for it, oldest first, each with its webhook deliveries
    # ("payment.credited (webhooks: 1 delivered)"), when the database was read.
    events: list[str] | None = None
    # Holds (issue 16), when the ledger was read: who sent the transaction, the last
    # screening's verdict (score, each rule with its weight and why) and the review.
    tx_sender: str | None = None
    risk: dict[str, Any] | None = None
    review: dict[str, Any] | None = None
    # Refunds of this payment, or the refund this transfer of ours is (issue 16).
    refunds: list[str] | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "log_index": self.index,
            "token": self.token,
            "from": self.from_address,
            "to": self.to_address,
            "amount": money.units_text(self.amount),
            "verdict": self.verdict,
        }
        for name in (
            "state",
            "reason",
            "confirmations",
            "events",
            "tx_sender",
            "risk",
            "review",
            "refunds",
        ):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out


@dataclass
class Tx:
    """One transaction: its status and its judged transfers."""

    tx: str
    status: str  # success, failed, unknown
    transfers: list[Transfer] = field(default_factory=list)


@dataclass(frozen=True)
class Refusal:
    """Why there is no report: bad usage or input (code 2), nothing found (code 1)."""

    message: str
    code: int


@dataclass(frozen=True)
class Summary:
    """What a report comes to: the verdict first, then where the rest went."""

    credits: int  # transfers to us that credit
    credit_total: int  # their sum, base units
    not_credited: Counter[str]  # verdict -> count, for transfers to us that do not credit
    others: int  # transfers to addresses that are not ours: ignored
    ledger: Counter[str]  # ledger state -> count, for transfers to us (when read)
    ledger_read: bool


def _as_is(address: str) -> str:
    return address


@dataclass
class Report:
    """Everything ``watcher explain`` says about one or more transactions of one network."""

    chain: str
    usdc: str
    receivers: frozenset[str]
    transactions: list[Tx]
    index_label: str = "log"  # what ``Transfer.index`` is called in the human view
    show_address: Callable[[str], str] = _as_is  # how the human view spells an address
    cursor_stream: str | None = None  # the follower's cursor whose head counts confirmations
    notes: list[str] = field(default_factory=list)

    def transfers(self) -> Iterator[Transfer]:
        for tx in self.transactions:
            yield from tx.transfers

    @property
    def credit_total(self) -> int:
        return sum(t.amount for t in self.transfers() if t.verdict == "credit")

    def to_us(self, t: Transfer) -> bool:
        """Whether ``t`` is addressed to one of our receivers (or may be: ``owner_unknown``).

        By the receiving address, not the verdict: on Solana ``wrong_token`` is judged
        before ownership, so a swap's other legs are ``wrong_token`` without being ours.
        """
        if t.verdict in ("credit", "owner_unknown"):
            return True
        return t.to_address is not None and t.to_address in self.receivers

    def summary(self) -> Summary:
        """The counts the human view leads with."""
        ours = [t for t in self.transfers() if self.to_us(t)]
        credits = [t for t in ours if t.verdict == "credit"]
        return Summary(
            credits=len(credits),
            credit_total=self.credit_total,
            not_credited=Counter(t.verdict for t in ours if t.verdict != "credit"),
            others=sum(1 for t in self.transfers() if not self.to_us(t)),
            ledger=Counter(t.state for t in ours if t.state is not None),
            ledger_read=any(t.state is not None for t in self.transfers()),
        )

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain": self.chain,
            "transactions": [
                {"tx": tx.tx, "status": tx.status, "transfers": [t.as_json() for t in tx.transfers]}
                for tx in self.transactions
            ],
            "credit_total": money.units_text(self.credit_total),
        }
        if self.notes:
            out["notes"] = list(self.notes)
        return out
