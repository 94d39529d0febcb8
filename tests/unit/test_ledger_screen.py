"""The ledger's screening of a batch: the backfill's fast path agrees with the screen."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

from watcher import ledger_screen
from watcher.screening import core

NOW = datetime(2026, 12, 1, tzinfo=UTC)
PAYER = "0x" + "cc" * 20


class Listed:
    def lookup(self, address: str) -> str | None:
        return "the list" if address == PAYER else None


def _items() -> list[ledger_screen.Item]:
    amounts = (1, 999_999, 1_000_000, 1_000_001, 10**12)
    ages = (None, timedelta(0), timedelta(days=7), timedelta(days=7, seconds=1), timedelta(days=90))
    senders = (None, PAYER, "0x" + "dd" * 20)
    out = []
    for chain, amount, age, sender in itertools.product(("base", "solana"), amounts, ages, senders):
        frm = sender if chain == "base" else "So1ana" + "1" * 38
        block = None if age is None else NOW - age
        out.append(ledger_screen.Item(chain, amount, block, NOW, frm, sender))
    return out


def _full(screen: core.Screen, items: list[ledger_screen.Item]) -> list[core.Verdict]:
    return [screen.judge(ledger_screen.item_facts(it, screen)) for it in items]


def test_fast_and_full_judgements_agree_for_every_screen() -> None:
    items = _items()
    screens = [
        core.Screen(),
        core.Screen(max_age=None),
        core.Screen(hold_above=1_000_000),
        core.Screen(hold_above=1_000_000, max_age=None),
        core.Screen(denylist=Listed()),
        core.Screen(hold_above=1_000_000, oracle_chains=frozenset({"base"})),
    ]
    for screen in screens:
        got = ledger_screen.judge_all(screen, items)
        full = _full(screen, items)
        held = {i for i, _ in got.held}
        assert held == {i for i, v in enumerate(full) if v.hold}, screen
        for i, verdict in got.held:
            assert verdict == full[i]
        for text, idx in got.passed.items():
            for i in idx:
                assert json.loads(text) == full[i].as_json(), (screen, i)
        assert sorted(held | {i for idx in got.passed.values() for i in idx}) == list(
            range(len(items))
        )


def test_a_needed_address_that_is_unknown_is_missing() -> None:
    screen = core.Screen(denylist=Listed())
    it = ledger_screen.Item("solana", 5, NOW, NOW, "owner", None)
    facts = ledger_screen.item_facts(it, screen)
    assert facts.addresses == (("source_owner", "owner"),)
    assert facts.missing == ("fee_payer",)
    assert ledger_screen.item_facts(it, core.Screen()).missing == ()
