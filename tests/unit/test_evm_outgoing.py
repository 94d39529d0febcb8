"""The EVM follower's view of our refund wallet (watcher/chains/evm_outgoing.py)."""

from __future__ import annotations

import pytest

from watcher import errors
from watcher.chains import evm_outgoing
from watcher.chains.evm_logs import TRANSFER_TOPIC, topic_for

USDC = "0x" + "cc" * 20
WALLET = "0x" + "77" * 20
PAYER = "0x" + "12" * 20


def log(frm: str, to: str, amount: int, block: int = 5, token: str = USDC) -> dict[str, object]:
    return {
        "address": token,
        "topics": [TRANSFER_TOPIC, topic_for(frm), topic_for(to)],
        "data": f"0x{amount:064x}",
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": "0x1",
        "blockNumber": hex(block),
        "blockHash": "0x" + "bb" * 32,
    }


def test_no_wallet_asks_nothing_and_writes_nothing() -> None:
    watch = evm_outgoing.Watch(USDC, [])
    assert not watch
    assert watch.calls([{"fromBlock": "0x1", "toBlock": "0x9"}]) == []
    assert watch.found("base", [], 1, 9, {}) is None


def test_a_wallet_adds_one_filter_on_the_from_topic_and_keeps_only_its_usdc() -> None:
    watch = evm_outgoing.Watch(USDC, [WALLET.upper().replace("0X", "0x")])
    ((method, (flt,)),) = watch.calls([{"blockHash": "0x" + "bb" * 32}])
    assert method == "eth_getLogs"
    assert flt["address"] == USDC and flt["topics"] == [TRANSFER_TOPIC, [topic_for(WALLET)], None]
    logs = [
        log(WALLET, PAYER, 700),
        log(PAYER, WALLET, 5),
        log(WALLET, PAYER, 9, token="0x" + "dd" * 20),
        log(WALLET, PAYER, 0),
    ]
    (out,) = watch.found("base", [logs], 1, 9, {5: "0x" + "bb" * 32}) or []
    assert (out.from_address, out.to_address, out.amount, out.block_number) == (
        WALLET,
        PAYER,
        700,
        5,
    )
    with pytest.raises(errors.RpcResponseError):
        watch.found("base", [[log(WALLET, PAYER, 1, block=12)]], 1, 9, {})
    with pytest.raises(errors.RpcResponseError):
        watch.found("base", [[log(WALLET, PAYER, 1)]], 1, 9, {5: "0x" + "cd" * 32})
