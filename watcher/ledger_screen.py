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


def row_facts(row: asyncpg.Record, screen: core.Screen) -> core.Facts:
    """Facts from a payments row (query ``ledger_screen_facts``)."""
    answers = row["oracle_answers"]
    return facts(
        chain=row["chain"],
        amount=int(row["amount"]),
        block_time=row["block_time"],
        first_seen=row["observed_at"],
        from_address=row["from_address"],
        tx_sender=row["tx_sender"],
        oracle=None if answers is None else json.loads(answers),
        screen=screen,
        payment_id=row["id"],
    )


def judge_all(screen: core.Screen, batch: Sequence[core.Facts]) -> Outcome:
    """Judge every payment of ``batch``; indexes into it, grouped by outcome."""
    out = Outcome()
    texts: dict[tuple[str, ...], str] = {}
    for i, f in enumerate(batch):
        verdict = screen.judge(f)
        if verdict.hold:
            out.held.append((i, verdict))
            continue
        # A passing verdict's JSON depends only on the rules checked: dump it once.
        text = texts.get(verdict.checked)
        if text is None:
            text = texts[verdict.checked] = dumps(verdict)
        out.passed.setdefault(text, []).append(i)
    return out


def dumps(verdict: core.Verdict) -> str:
    """``verdict`` as the text of ``payments.risk``."""
    return json.dumps(verdict.as_json(), separators=(",", ":"))


def answers_text(answers: Mapping[str, bool | None] | None) -> str | None:
    """The oracle's answers as the text of ``payments.oracle_answers`` (None: not asked)."""
    return None if answers is None else json.dumps(dict(answers), separators=(",", ":"))
