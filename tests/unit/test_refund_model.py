"""How much of a payment a refund gives back, and the calls it voids (watcher/refunds/model.py)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from watcher.refunds import model, proof

PRICE = 100_000


def paid(amount: int, **over: object) -> model.Paid:
    base: dict[str, object] = {
        "amount": amount,
        "invoice_amount": None,
        "token_total": None,
        "token_remaining": None,
        "token_calls_refunded": 0,
        "refunded": 0,
        "price": PRICE,
    }
    base.update(over)
    return model.Paid(**base)  # type: ignore[arg-type]


def test_whole_of_an_unclaimed_payment_gives_all_and_voids_every_call() -> None:
    got = model.plan("whole", paid(1_000_000))
    assert got == model.Plan(1_000_000, 10, False)


def test_unconsumed_part_of_a_token_is_remaining_calls_at_the_price() -> None:
    p = paid(1_000_000, token_total=10, token_remaining=4)
    assert model.plan("unconsumed", p) == model.Plan(400_000, 4, True)
    # after that refund the token is empty and nothing is left to refund
    after = paid(
        1_000_000, token_total=10, token_remaining=0, token_calls_refunded=4, refunded=400_000
    )
    assert model.refundable(after) == 0
    with pytest.raises(model.Refused) as exc:
        model.plan("whole", after)
    assert exc.value.code == "nothing_refundable"


def test_whole_of_a_used_token_keeps_what_was_served() -> None:
    p = paid(1_000_000, token_total=10, token_remaining=7)
    assert model.plan("whole", p) == model.Plan(700_000, 7, True)


def test_the_invoice_jitter_is_not_an_excess_but_paying_more_is() -> None:
    exact = paid(301_234, invoice_amount=301_234)  # 3 calls and the invoice's jitter
    with pytest.raises(model.Refused):
        model.plan("excess", exact)
    over = paid(500_000 + 1234, invoice_amount=300_000 + 1234, token_total=5, token_remaining=5)
    assert model.plan("excess", over) == model.Plan(200_000, 2, True)
    # four calls served: the excess is capped by what is left (one call and the jitter)
    used = paid(501_234, invoice_amount=301_234, token_total=5, token_remaining=1)
    assert model.plan("excess", used) == model.Plan(101_234, 1, True)
    spent = paid(501_234, invoice_amount=301_234, token_total=5, token_remaining=0)
    assert model.plan("excess", spent) == model.Plan(1_234, 0, True)


def test_unconsumed_needs_a_token_and_unknown_kinds_are_refused() -> None:
    for kind, code in (("unconsumed", "no_token"), ("half", "invalid_kind")):
        with pytest.raises(model.Refused) as exc:
            model.plan(kind, paid(1_000_000))
        assert exc.value.code == code


def test_a_signed_destination_binds_chain_payment_destination_and_amount() -> None:
    payer = Account.create()
    dest = "0x" + "12" * 20
    text = proof.message("base", "0x" + "aa" * 32, 3, dest, 500_000)
    sig = "0x" + bytes(Account.sign_message(encode_defunct(text=text), payer.key).signature).hex()
    src = payer.address.lower()
    common = {
        "chain": "base",
        "tx_hash": "0x" + "aa" * 32,
        "log_index": 3,
        "source": src,
        "secret_hash": None,
    }
    ok = proof.judge(**common, given=proof.Claimed(destination=dest, signature=sig, amount=500_000))
    assert ok == (dest, "signature")
    for bad in (
        proof.Claimed(destination=dest, signature=sig, amount=500_001),
        proof.Claimed(destination="0x" + "13" * 20, signature=sig, amount=500_000),
        proof.Claimed(destination=dest),
    ):
        with pytest.raises(model.Refused) as exc:
            proof.judge(**common, given=bad)
        assert exc.value.status == 403
    assert proof.judge(**common, given=proof.Claimed()) == (src, "source")
