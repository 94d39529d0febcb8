"""`watcher explain`: EVM and Solana fill one model, shown by one renderer (no I/O)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from watcher.explain import evm, model, render, solana

MAINNET = Path(__file__).resolve().parents[1] / "fixtures" / "mainnet"
BLOCK_18M = MAINNET / "ethereum" / "erigon_eth_getBlockReceipts_block_18000000.json"
ORCA_CPI = MAINNET / "solana" / "keyapp_orca_transitive_swap_usdc_via_cpi.json"
DURABLE = MAINNET / "solana" / "explorer_usdc_transferChecked_durable_nonce.json"
USDC_ETH = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
USDC_SOL = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
ETH_US = "0x91a559d248a216d1dd17c4d39f51bda9bd1de7e2"
SOL_US = "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _evm() -> model.Report:
    receipts = evm.receipts_of(_load(BLOCK_18M))
    return evm.judge(
        "ethereum", receipts, usdc=USDC_ETH, receivers=frozenset({ETH_US}), min_units=100_000
    )


def _solana(path: Path, receiver: str) -> model.Report:
    return solana.judge(
        "solana", [_load(path)], receivers=[receiver], token=USDC_SOL, min_units=100_000
    )


def test_both_families_give_the_same_json_shape() -> None:
    docs = [_evm().as_json(), _solana(DURABLE, SOL_US).as_json()]
    for doc in docs:
        assert set(doc) == {"chain", "transactions", "credit_total"}
        for tx in doc["transactions"]:
            assert set(tx) == {"tx", "status", "transfers"}
            for t in tx["transfers"]:
                assert set(t) == {"log_index", "token", "from", "to", "amount", "verdict"}
                assert isinstance(t["amount"], str) and t["amount"].isdigit()
    assert [d["credit_total"] for d in docs] == ["1800000000", "3800000"]


def test_both_families_read_the_same_in_the_human_view() -> None:
    evm_text = render.render(_evm())
    sol_text = render.render(_solana(DURABLE, SOL_US))
    assert "log 176: 1800.00 USDC 0x" in evm_text and "=> credit" in evm_text
    assert "0x91A559D248a216d1dD17C4D39F51bdA9bd1DE7e2" in evm_text  # checksummed
    assert f"account 4: 3.80 USDC 3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg -> {SOL_US}" in (
        sol_text
    )
    # The verdict and the total lead (issue 15: they used to close a block's long listing).
    assert evm_text.startswith("credit total: 1800.00 USDC (1800000000 base units) from 1 payment")
    assert sol_text.startswith("credit total: 3.80 USDC (3800000 base units) from 1 payment")


def test_other_tokens_are_shown_in_their_base_units_not_as_dollars() -> None:
    report = _solana(ORCA_CPI, "D7XYERWodEGaoN2X855T2qLvse28BSjfkvfCyW2EDBWy")
    text = render.render(report)
    assert "0.000907 USDC" in text and "=> below_minimum" in text
    assert "88808 base units of token xxxxa1sKNGwFtw2kFn8XauW9xq8hBZ5kVtcSesTT9fW" in text
    # A swap's legs to others are a count; --all lists them, by the same rule.
    assert "So11111111111111111111111111111111111111112" not in text
    every = render.render(report, show_all=True)
    assert "999999 base units of token So11111111111111111111111111111111111111112" in every


def test_ledger_fields_and_notes_appear_only_when_known() -> None:
    report = _solana(DURABLE, SOL_US)
    (t,) = report.transactions[0].transfers
    t.state, t.reason = "below_minimum", "below the minimum payment of 0.10 USDC"
    report.notes.append("database unreachable (OSError): no ledger state shown")
    doc = report.as_json()
    (shown,) = doc["transactions"][0]["transfers"]
    assert (shown["state"], shown["reason"]) == (t.state, t.reason)
    assert "confirmations" not in shown and doc["notes"] == report.notes
    text = render.render(report)
    assert "[ledger: below_minimum]" in text and "below the minimum payment of 0.10 USDC" in text
    assert text.endswith("note: database unreachable (OSError): no ledger state shown")


def test_the_summary_counts_by_receiver_not_by_verdict() -> None:
    # On Solana wrong_token is judged before ownership: the swap's other legs are not ours.
    s = _solana(ORCA_CPI, "D7XYERWodEGaoN2X855T2qLvse28BSjfkvfCyW2EDBWy").summary()
    assert (s.credits, s.credit_total, s.others) == (0, 0, 3)
    assert dict(s.not_credited) == {"below_minimum": 1, "wrong_token": 1}
    assert not s.ledger_read and not s.ledger
    e = _evm().summary()
    assert (e.credits, e.credit_total, sum(e.not_credited.values())) == (1, 1_800_000_000, 0)
    assert e.credits + e.others == sum(len(tx.transfers) for tx in _evm().transactions)
