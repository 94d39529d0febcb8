"""Transaction senders for screening (issue 16): learned only when needed, in few calls.

The RPC pool is real; the node behind it is scripted at the transport seam
(tests/unit/fakenodes.py), so the calls counted are the calls sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.unit.fakenodes import FAST, Network, Node
from watcher import errors, ledger
from watcher.chains import evm_senders
from watcher.rpc import RpcPool
from watcher.screening import core, prefetch

US = "0x" + "aa" * 20


def _addr(i: int) -> str:
    return "0x" + f"{i:040x}"


@dataclass
class Chain(Node):
    """Transactions by hash: (block number, block hash, sender); counts each method asked."""

    txs: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    asked: Counter[str] = field(default_factory=Counter)
    wrong_block: bool = False

    def result(self, method: str, params: list[Any]) -> Any:
        self.asked[method] += 1
        if method == "eth_getTransactionByHash":
            got = self.txs.get(params[0])
            if got is None:
                return None
            n, h, sender = got
            h = "0x" + "ee" * 32 if self.wrong_block else h
            return {"hash": params[0], "blockNumber": hex(n), "blockHash": h, "from": sender}
        if method == "eth_getBlockByNumber" and params[1] is True:
            n = int(params[0], 16)
            mine = [(t, v) for t, v in self.txs.items() if v[0] == n]
            return {
                "number": params[0],
                "hash": mine[0][1][1],
                "transactions": [{"hash": t, "from": v[2]} for t, v in mine],
            }
        return super().result(method, params)


def _transfers(chain: Chain, blocks: int, per_block: int) -> list[ledger.Transfer]:
    out = []
    for b in range(blocks):
        for k in range(per_block):
            i = b * per_block + k
            tx = "0x" + f"{i:064x}"
            bh = "0x" + f"{b + 5000:064x}"
            chain.txs[tx] = (100 + b, bh, _addr(i + 1).upper().replace("0X", "0x"))
            out.append(
                ledger.Transfer(
                    chain="base",
                    tx_hash=tx,
                    log_index=0,
                    block_number=100 + b,
                    block_hash=bh,
                    token="0x" + "bb" * 20,
                    to_address=US,
                    amount=1_000_000,
                    from_address=_addr(10**6 + i),
                )
            )
    return out


class Listed:
    def lookup(self, address: str) -> str | None:
        return None


class Oracle:
    chains = frozenset({"base"})

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def lookup(self, chain: str, addresses: Sequence[str]) -> dict[str, bool | None]:
        self.asked += addresses
        return {a: (False if a.endswith("1") else None) for a in addresses}


@pytest.fixture(autouse=True)
def screens() -> Iterator[None]:
    yield
    core.install(core.Screen())
    prefetch.install(None)


def _pool(chain: Chain) -> RpcPool:
    net = Network(a=chain)
    return RpcPool("base", ["http://a/"], chain_id=8453, transport=net.transport, policy=FAST)


async def test_no_call_at_all_when_the_screen_needs_no_address() -> None:
    chain = Chain()
    pool = _pool(chain)
    got = await evm_senders.learn(pool, "base", _transfers(chain, 5, 1))
    assert [t.tx_sender for t in got] == [None] * 5
    assert chain.received == []
    await pool.aclose()


async def test_sparse_backfill_asks_each_transaction_in_batches() -> None:
    core.install(core.Screen(denylist=Listed()))
    chain = Chain()
    pool = _pool(chain)
    transfers = _transfers(chain, 250, 1)  # a merchant's backfill: one payment per block
    got = await evm_senders.learn(pool, "base", transfers)
    assert [t.tx_sender for t in got] == [_addr(i + 1) for i in range(250)]  # lowercased
    # 250 calls in 3 HTTP requests; full blocks would be 250 calls too, each a whole block.
    assert chain.asked["eth_getTransactionByHash"] == 250
    assert chain.asked["eth_getBlockByNumber"] == 0
    assert sorted(chain.received[1:]) == ["batch[100]", "batch[100]", "batch[50]"]
    await pool.aclose()


async def test_crowded_blocks_are_read_whole_in_fewer_calls() -> None:
    core.install(core.Screen(denylist=Listed()))
    chain = Chain()
    pool = _pool(chain)
    transfers = _transfers(chain, 10, 100)  # the bench's shape: thousands per block
    got = await evm_senders.learn(pool, "base", transfers)
    assert all(t.tx_sender is not None for t in got)
    assert chain.asked["eth_getBlockByNumber"] == 10  # not 1000 eth_getTransactionByHash
    assert chain.asked["eth_getTransactionByHash"] == 0
    await pool.aclose()


async def test_an_unknown_transaction_leaves_its_sender_unknown_another_block_retries() -> None:
    core.install(core.Screen(denylist=Listed()))
    chain = Chain()
    pool = _pool(chain)
    transfers = _transfers(chain, 2, 1)
    del chain.txs[transfers[1].tx_hash]
    got = await evm_senders.learn(pool, "base", transfers)
    assert [t.tx_sender is None for t in got] == [False, True]
    chain.wrong_block = True
    with pytest.raises(errors.RpcResponseError):
        await evm_senders.learn(pool, "base", transfers[:1])
    await pool.aclose()


async def test_the_oracle_is_asked_once_per_address_and_answers_kept_per_transfer() -> None:
    core.install(core.Screen(oracle_chains=frozenset({"base"})))
    oracle = Oracle()
    prefetch.install(oracle)
    chain = Chain()
    pool = _pool(chain)
    transfers = _transfers(chain, 3, 1)
    got = await evm_senders.learn(pool, "base", transfers)
    assert len(oracle.asked) == len(set(oracle.asked)) == 6  # from + tx sender, each once
    for t in got:
        assert t.oracle_answers is not None
        assert set(t.oracle_answers) == {t.from_address, t.tx_sender}
    await pool.aclose()
