"""The payment rule on recorded mainnet transactions (balance deltas, not instructions)."""

from __future__ import annotations

import pytest

from tests import fixtures
from watcher.chains import solana_tx

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


def test_durable_nonce_transfer_checked_pays_the_receiver() -> None:
    tx = solana_tx.view(fixtures.load_solana_fixture(fixtures.DURABLE_NONCE))
    (p,) = solana_tx.payments(tx, "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M", USDC)
    assert p.amount == 3_800_000
    assert p.payer == "3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg"
    assert p.account_index == 4
    assert p.token_account == "Efc6bp3wVC2iQpewxRmKdZM8vzt9DCFFhL7EiHYNGunv"
    assert p.slot == 419685246
    assert p.signature.startswith("4LXpF3MC")
    assert p.references == ()  # a plain transferChecked: no trailing accounts
    # the sender is not paid, whatever it is asked as
    assert solana_tx.payments(tx, "3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg", USDC) == []


def test_cpi_swap_counts_the_net_delta_not_inbound_transfers() -> None:
    tx = solana_tx.view(fixtures.load_solana_fixture(fixtures.ORCA_CPI))
    (p,) = solana_tx.payments(tx, "D7XYERWodEGaoN2X855T2qLvse28BSjfkvfCyW2EDBWy", USDC)
    assert p.amount == 907
    inbound = sum(t.amount for t in tx.transfers if t.destination == p.token_account)
    assert inbound == 210_190  # what summing instructions would wrongly credit


def test_failed_transaction_is_never_a_payment() -> None:
    tx = solana_tx.view(fixtures.load_solana_fixture(fixtures.ORCA_FAILED))
    assert tx.failed
    for change in tx.changes:
        assert solana_tx.payments(tx, change.owner or "", change.mint) == []


def test_owner_is_never_guessed_when_balances_lack_it() -> None:
    # Old answers name no owner: it stays unknown (today's owner says nothing about then).
    tx = solana_tx.view(fixtures.load_solana_fixture(fixtures.ORCA_FAILED))
    assert all(c.owner is None and c.pre_owner is None for c in tx.changes)


def test_another_mint_with_same_decimals_is_not_usdc() -> None:
    tx = solana_tx.view(fixtures.load_solana_fixture(fixtures.DURABLE_NONCE))
    fake = "So11111111111111111111111111111111111111112"
    assert solana_tx.payments(tx, "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M", fake) == []


@pytest.mark.parametrize("answer", [{}, {"jsonrpc": "2.0", "result": None}, [], "x"])
def test_malformed_answers_are_refused(answer: object) -> None:
    with pytest.raises(solana_tx.MalformedTransaction):
        solana_tx.view(answer)
