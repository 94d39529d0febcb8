"""The sanctions oracle client (watcher/screening/oracle.py) against a mock of Chainalysis's
contract on anvil: answers per address, the TTL cache, and what a non-answer is."""

from __future__ import annotations

import httpx
from eth_account import Account

from devkit.anvil import Anvil, calldata, deploy_sanctions_oracle
from watcher import rpc
from watcher.screening import oracle

CHAIN_ID = 31337


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting(httpx.AsyncBaseTransport):
    """The real transport, counting the eth_calls that reach anvil (the RPC seam)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"eth_call" in request.content:
            self.calls += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _oracle(
    anvil: Anvil, contract: str, transport: httpx.AsyncBaseTransport, **kw: object
) -> oracle.Oracle:
    pool = rpc.RpcPool("base", [anvil.url], chain_id=CHAIN_ID, transport=transport)
    target = oracle.Target(contract, (anvil.url,), CHAIN_ID)
    return oracle.Oracle({"base": target}, pool_for=lambda _chain: pool, **kw)  # type: ignore[arg-type]


async def test_the_mock_answers_for_its_list_and_answers_are_cached(anvil: Anvil) -> None:
    listed = [Account.create().address for _ in range(2)]
    clean = Account.create().address
    contract = await deploy_sanctions_oracle(anvil, listed)
    transport, clock = Counting(), Clock()
    sanctions = _oracle(anvil, contract, transport, ttl=60.0, clock=clock)
    asked = [listed[0], listed[1].lower(), clean]
    assert await sanctions.lookup("base", asked) == {
        listed[0]: True,
        listed[1].lower(): True,
        clean: False,
    }
    assert transport.calls == 3
    assert await sanctions.lookup("base", [clean.lower(), listed[0]]) == {
        clean.lower(): False,
        listed[0]: True,
    }
    assert transport.calls == 3  # both cached, whatever the spelling
    clock.now += 61  # past the TTL: asked again
    assert await sanctions.lookup("base", [clean]) == {clean: False}
    assert transport.calls == 4
    await transport.aclose()


async def test_a_revert_or_no_contract_is_no_answer_and_is_not_cached(anvil: Anvil) -> None:
    payer = Account.create().address
    contract = await deploy_sanctions_oracle(anvil, [payer])
    transport = Counting()
    sanctions = _oracle(anvil, contract, transport)
    await anvil.send(anvil.accounts[0], contract, calldata("setBroken(bool)", True))
    await anvil.mine()
    assert await sanctions.lookup("base", [payer]) == {payer: None}  # it reverts
    assert await sanctions.lookup("base", [payer]) == {payer: None}
    assert transport.calls == 2  # a non-answer is asked again
    await anvil.send(anvil.accounts[0], contract, calldata("setBroken(bool)", False))
    await anvil.mine()
    assert await sanctions.lookup("base", [payer]) == {payer: True}
    nowhere = _oracle(anvil, "0x" + "00" * 19 + "99", transport)  # no code: answers "0x"
    assert await nowhere.lookup("base", [payer]) == {payer: None}
    assert await sanctions.lookup("ethereum", [payer]) == {payer: None}  # no oracle there
    assert await sanctions.lookup("base", ["not-an-address"]) == {"not-an-address": None}
    await transport.aclose()


async def test_an_unreachable_node_is_no_answer_not_an_exception() -> None:
    dead = "http://127.0.0.1:9"
    target = oracle.Target("0x" + "11" * 20, (dead,), CHAIN_ID)
    sanctions = oracle.Oracle({"base": target}, deadline=1.0)
    try:
        payer = "0x" + "22" * 20
        assert await sanctions.lookup("base", [payer]) == {payer: None}
    finally:
        await sanctions.aclose()
