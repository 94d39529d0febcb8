"""Log parsing and the logs bloom, on recorded mainnet receipts (no I/O beyond the fixture)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watcher.chains.evm_logs import TRANSFER_TOPIC, BloomFilter, parse_transfer, topic_for

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "fixtures/mainnet/ethereum/erigon_eth_getBlockReceipts_block_18000000.json"
)
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
PAYEE = "0x91a559d248a216d1dd17c4d39f51bda9bd1de7e2"


@pytest.fixture(scope="module")
def receipts() -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(FIXTURE.read_text())[0]["response"]["result"]
    return data


def test_bloom_never_rules_out_a_receipt_that_pays_us(receipts: list[dict[str, Any]]) -> None:
    bloom = BloomFilter(USDC, [PAYEE])
    paying = [
        r
        for r in receipts
        if any(
            (t := parse_transfer(lg)) and t.token == USDC and t.to_address == PAYEE
            for lg in r["logs"]
        )
    ]
    assert len(paying) == 1
    assert bloom.may_match(paying[0]["logsBloom"])


def test_bloom_rules_out_receipts_without_usdc_transfers_to_us(
    receipts: list[dict[str, Any]],
) -> None:
    bloom = BloomFilter(USDC, [PAYEE])
    ruled_out = [r for r in receipts if not bloom.may_match(r["logsBloom"])]
    assert len(ruled_out) == 64  # of 94; most others have no logs (an empty bloom proves nothing)
    for r in ruled_out:
        for lg in r["logs"]:
            t = parse_transfer(lg)
            assert t is None or t.token != USDC or t.to_address != PAYEE


def test_empty_or_missing_bloom_proves_nothing() -> None:
    bloom = BloomFilter(USDC, [PAYEE])
    assert bloom.may_match(None) and bloom.may_match("0x" + "00" * 256)
    assert bloom.may_match("0x1234")  # malformed: fetch the logs rather than guess


def _log(**over: Any) -> dict[str, Any]:
    log = {
        "address": USDC,
        "topics": [TRANSFER_TOPIC, topic_for("0x" + "11" * 20), topic_for(PAYEE)],
        "data": "0x" + f"{5_000_000:064x}",
        "blockNumber": "0x10",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x3",
    }
    log.update(over)
    return log


def test_parse_transfer_shapes() -> None:
    t = parse_transfer(_log())
    assert t is not None and (t.amount, t.to_address, t.log_index) == (5_000_000, PAYEE, 3)
    assert parse_transfer(_log(address=USDC.upper().replace("0X", "0x"))) is not None
    nft = _log(topics=[*_log()["topics"], "0x" + "00" * 31 + "07"], data="0x")
    bad_topic = _log(topics=[TRANSFER_TOPIC, "0x" + "ff" * 32, topic_for(PAYEE)])
    for bad in (
        nft,
        bad_topic,
        _log(data="0x01"),
        _log(data="0x" + "00" * 64),
        _log(removed=True),
        _log(topics=["0x" + "00" * 32, *_log()["topics"][1:]]),
        _log(transactionHash="0x12"),
        _log(logIndex=None),
        {"topics": None},
    ):
        assert parse_transfer(bad) is None, bad
