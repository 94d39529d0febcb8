"""The screening judgement (watcher/screening/core.py): which rules fire, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.screening import core

NOW = datetime(2026, 12, 1, tzinfo=UTC)
PAYER = "0x" + "11" * 20
ROUTER = "0x" + "22" * 20


class _List:
    def __init__(self, *listed: str) -> None:
        self.listed = set(listed)

    def lookup(self, address: str) -> str | None:
        return "the test list" if address in self.listed else None


def _facts(**kw: object) -> core.Facts:
    base: dict[str, object] = {
        "chain": "base",
        "amount": 1_000_000,
        "block_time": NOW - timedelta(minutes=1),
        "first_seen": NOW,
        "addresses": (("from", PAYER), ("tx_sender", ROUTER)),
    }
    base.update(kw)
    return core.Facts(**base)  # type: ignore[arg-type]


def test_defaults_credit_a_fresh_payment_and_check_only_its_age() -> None:
    verdict = core.Screen().judge(_facts())
    assert not verdict.hold and verdict.score == 0 and verdict.reason is None
    assert verdict.checked == ("payment_age",)


def test_a_listed_transaction_sender_is_caught_though_from_is_clean() -> None:
    verdict = core.Screen(denylist=_List(ROUTER)).judge(_facts())
    assert verdict.hold and verdict.score == 100
    assert [(f.rule, f.address) for f in verdict.fired] == [("denylist", ROUTER)]
    assert "tx_sender" in (verdict.reason or "")


def test_oracle_sanctioned_and_unanswered_both_hold() -> None:
    screen = core.Screen(oracle_chains=frozenset({"base"}))
    sanctioned = screen.judge(_facts(oracle={PAYER: True, ROUTER: False}))
    assert [f.rule for f in sanctioned.fired] == ["sanctions_oracle"]
    unanswered = screen.judge(_facts(oracle={PAYER: False}))
    assert [(f.rule, f.address) for f in unanswered.fired] == [("oracle_unanswered", ROUTER)]
    assert screen.judge(_facts(oracle={PAYER: False, ROUTER: False})).hold is False
    # Not an oracle chain: its answers are not asked for.
    assert not screen.judge(_facts(chain="ethereum", oracle=None)).hold


def test_an_address_the_follower_could_not_learn_holds_when_addresses_matter() -> None:
    assert core.Screen(denylist=_List()).judge(_facts(missing=("tx_sender",))).hold
    assert not core.Screen().judge(_facts(missing=("tx_sender",))).hold


def test_amount_threshold_is_strictly_above() -> None:
    screen = core.Screen(hold_above=1_000_000)
    assert not screen.judge(_facts(amount=1_000_000)).hold
    over = screen.judge(_facts(amount=1_000_001))
    assert [f.rule for f in over.fired] == ["amount_review"]
    assert "1.000001 USDC is above the review threshold of 1.00 USDC" in (over.reason or "")


def test_age_rule_on_a_backfill_and_off() -> None:
    old = _facts(block_time=NOW - timedelta(days=30))
    verdict = core.Screen().judge(old)
    assert [f.rule for f in verdict.fired] == ["payment_age"]
    assert "30 days" in (verdict.reason or "")
    assert not core.Screen(max_age=None).judge(old).hold
    assert not core.Screen().judge(_facts(block_time=None)).hold
    assert core.Screen().claim_cutoff(NOW) == NOW - timedelta(days=7)
    assert core.Screen(max_age=None).claim_cutoff(NOW) is None


def test_score_is_the_capped_sum_and_the_json_says_each_rule() -> None:
    screen = core.Screen(hold_above=1, denylist=_List(PAYER, ROUTER))
    verdict = screen.judge(_facts(block_time=NOW - timedelta(days=9)))
    assert verdict.score == 100
    body = verdict.as_json()
    assert [r["rule"] for r in body["rules"]] == [
        "denylist",
        "denylist",
        "amount_review",
        "payment_age",
    ]
    assert body["checked"] == ["denylist", "amount_review", "payment_age"]


def test_install_replaces_the_process_screen() -> None:
    before = core.current()
    try:
        mine = core.Screen(max_age=None)
        core.install(mine)
        assert core.current() is mine
    finally:
        core.install(before)
