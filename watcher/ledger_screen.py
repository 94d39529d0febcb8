"""The facts the ledger screens a payment on, and the outcome of screening many (issue 16).

Pure: ``watcher/ledger.py`` reads the rows (or takes the transfers a follower saw),
this module asks the process's screen (``watcher.screening.core.current()``) about
each and splits them into what may be credited and what is held. Set-based for the
backfill's sake: the passing verdicts of one batch are a handful of distinct JSON
values (one per set of rules checked), so each is one UPDATE, not one per row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from watcher import networks
from watcher.screening import core

# The roles each family's two addresses play: (from_address, tx_sender).
_ROLES: Mapping[str, tuple[core.Role, core.Role]] = {
    "evm": ("from", "tx_sender"),
    "solana": ("source_owner", "fee_payer"),
}


@dataclass(slots=True)
class Outcome:
    """What screening a batch decided: ids to credit per risk JSON, and the held ones."""

    passed: dict[str, list[int]] = field(default_factory=dict)  # risk json -> indexes
    held: list[tuple[int, core.Verdict]] = field(default_factory=list)  # (index, verdict)


def facts(
    *,
    chain: str,
    amount: int,
    block_time: datetime | None,
    first_seen: datetime,
    from_address: str | None,
    tx_sender: str | None,
    oracle: Mapping[str, bool | None] | None,
    screen: core.Screen,
    payment_id: int | None = None,
) -> core.Facts:
    """The screen's facts for one payment; an address the screen needs but that is
    unknown is ``missing`` (the payment is held, never credited unseen)."""
    roles = _ROLES[networks.family(chain)]
    addresses: list[tuple[core.Role, str]] = []
    missing: list[core.Role] = []
    for role, address in zip(roles, (from_address, tx_sender), strict=True):
        if address is not None:
            addresses.append((role, address))
        elif screen.needs_addresses(chain):
            missing.append(role)
    return core.Facts(
        chain=chain,
        amount=amount,
        block_time=block_time,
        first_seen=first_seen,
        addresses=tuple(addresses),  # one address in both roles is screened in each
        missing=tuple(missing),
        oracle=oracle,
        payment_id=payment_id,
    )


# The rules the fast path below may stand in for: neither reads an address.
_PLAIN_RULES = frozenset({"amount_review", "payment_age"})


@dataclass(frozen=True, slots=True)
class Item:
    """One payment to screen, as plain values (cheap to build for 1e5 rows)."""

    chain: str
    amount: int
    block_time: datetime | None
    first_seen: datetime
    from_address: str | None
    tx_sender: str | None
    oracle: Mapping[str, bool | None] | None = None
    payment_id: int | None = None


def row_item(row: asyncpg.Record) -> Item:
    """A payments row (query ``ledger_screen_facts``) as an item to screen."""
    answers = row["oracle_answers"]
    return Item(
        row["chain"],
        int(row["amount"]),
        row["block_time"],
        row["observed_at"],
        row["from_address"],
        row["tx_sender"],
        None if answers is None else json.loads(answers),
        row["id"],
    )


def item_facts(it: Item, screen: core.Screen) -> core.Facts:
    """The screen's facts for one item."""
    return facts(
        chain=it.chain,
        amount=it.amount,
        block_time=it.block_time,
        first_seen=it.first_seen,
        from_address=it.from_address,
        tx_sender=it.tx_sender,
        oracle=it.oracle,
        screen=screen,
        payment_id=it.payment_id,
    )


def judge_all(screen: core.Screen, batch: Sequence[Item]) -> Outcome:
    """Judge every payment of ``batch``; indexes into it, grouped by outcome.

    Fast path for a backfill: on a chain where the screen checks only the amount and
    the age (no rule reads an address), a payment within both passes without building
    its facts; any other is judged in full (the verdict's reasons come from the
    screen). tests/unit/test_ledger_screen.py checks both paths agree.
    """
    out = Outcome()
    plain: dict[str, str | None] = {}  # chain -> its passing verdict's JSON, if fast
    texts: dict[tuple[str, ...], str] = {}
    for i, it in enumerate(batch):
        if it.chain not in plain:
            plain[it.chain] = _plain_pass(screen, it.chain, it.first_seen)
        text = plain[it.chain]
        if text is not None and _within(screen, it):
            out.passed.setdefault(text, []).append(i)
            continue
        verdict = screen.judge(item_facts(it, screen))
        if verdict.hold:
            out.held.append((i, verdict))
            continue
        # A passing verdict's JSON depends only on the rules checked: dump it once.
        text = texts.get(verdict.checked)
        if text is None:
            text = texts[verdict.checked] = dumps(verdict)
        out.passed.setdefault(text, []).append(i)
    return out


def _plain_pass(screen: core.Screen, chain: str, now: datetime) -> str | None:
    """The JSON of a passing verdict on ``chain`` when only plain rules are checked there."""
    if screen.needs_addresses(chain):
        return None
    neutral = screen.judge(core.Facts(chain=chain, amount=0, block_time=None, first_seen=now))
    if neutral.hold or not set(neutral.checked) <= _PLAIN_RULES:
        return None
    return dumps(neutral)


def _within(screen: core.Screen, it: Item) -> bool:
    """Within the amount threshold and the age limit (what the plain rules check)."""
    if screen.hold_above is not None and it.amount > screen.hold_above:
        return False
    if screen.max_age is None or it.block_time is None:
        return True
    return it.first_seen - it.block_time <= screen.max_age


def dumps(verdict: core.Verdict) -> str:
    """``verdict`` as the text of ``payments.risk``."""
    return json.dumps(verdict.as_json(), separators=(",", ":"))


def answers_text(answers: Mapping[str, bool | None] | None) -> str | None:
    """The oracle's answers as the text of ``payments.oracle_answers`` (None: not asked)."""
    return None if answers is None else json.dumps(dict(answers), separators=(",", ":"))
