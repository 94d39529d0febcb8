"""The RPC pool against real anvil processes over real HTTP.

Faults that a healthy anvil cannot produce (429, refused batches) are injected by
a transport that wraps httpx's real one: requests still reach anvil, or are
answered in its place at the seam. Dead and hanging endpoints are real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import httpx
import pytest

from devkit.anvil import Anvil, free_port, start_anvil
from watcher import errors
from watcher.rpc import Policy, RpcPool

POLICY = Policy(
    timeout=0.5,
    deadline=5.0,
    max_attempts=3,
    backoff=0.01,
    backoff_max=0.05,
    failure_threshold=2,
    cooldown=0.3,
    max_head_lag=5,
    head_probe_interval=3600.0,
)

Fault = Callable[[httpx.Request], httpx.Response | None]


class FaultTransport(httpx.AsyncBaseTransport):
    """httpx's real transport, with per-port faults answered before anvil sees them."""

    def __init__(self) -> None:
        self.real = httpx.AsyncHTTPTransport()
        self.faults: dict[int, Fault] = {}
        self.seen: dict[int, list[str]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        port = request.url.port or 80
        body = json.loads(request.content)
        name = f"batch[{len(body)}]" if isinstance(body, list) else body["method"]
        self.seen.setdefault(port, []).append(name)
        fault = self.faults.get(port)
        answer = fault(request) if fault else None
        return answer if answer is not None else await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.fixture
async def two_anvils() -> AsyncIterator[tuple[Anvil, Anvil]]:
    """Two anvils on the same chain id (8453).

    Started one after the other: ``free_port`` releases its port before anvil binds
    it, so two concurrent starts can be handed the same port and share one process.
    """
    a = await start_anvil(chain_id=8453)
    b = await start_anvil(chain_id=8453)
    assert a.port != b.port and a.process.poll() is None and b.process.poll() is None
    try:
        yield a, b
    finally:
        await asyncio.gather(a.close(), b.close())


@pytest.fixture
async def faults() -> AsyncIterator[FaultTransport]:
    transport = FaultTransport()
    yield transport
    await transport.aclose()


def chain() -> str:
    return f"it{uuid.uuid4().hex[:8]}"


async def test_an_anvil_on_another_chain_id_is_refused_and_the_right_one_used() -> None:
    wrong = await start_anvil(chain_id=1)
    right = await start_anvil(chain_id=8453)
    await right.mine(7)
    pool = RpcPool(chain(), [wrong.url, right.url], chain_id=8453, policy=POLICY)
    try:
        assert await pool.head() == 7
        assert int(await pool.request("eth_chainId"), 16) == 8453
        first, second = pool.status()
        assert first.refused == "chain id 1, expected 8453" and not first.healthy
        assert second.healthy and second.head == 7
    finally:
        await pool.aclose()
        await asyncio.gather(wrong.close(), right.close())


async def test_dead_and_hanging_endpoints_are_rotated_past(anvil: Anvil) -> None:
    released = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), 30)  # bounded; released at the end
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    hanging = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    hanging_port = hanging.sockets[0].getsockname()[1]
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    urls = [dead, f"http://127.0.0.1:{hanging_port}", anvil.url]
    pool = RpcPool(chain(), urls, chain_id=anvil.chain_id, policy=POLICY)
    try:
        await anvil.mine(3)
        assert await pool.request("eth_blockNumber") == "0x3"
        dead_st, hanging_st, good = pool.status()
        assert dead_st.success_rate == 0.0 and hanging_st.success_rate == 0.0
        assert good.healthy and good.head == 3
    finally:
        await pool.aclose()
        released.set()
        hanging.close()
        await hanging.wait_closed()


async def test_all_endpoints_down_raises_no_healthy_endpoint() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/key/SECRET", f"http://127.0.0.1:{free_port()}"]
    pool = RpcPool(chain(), urls, chain_id=8453, policy=POLICY)
    try:
        with pytest.raises(errors.NoHealthyEndpoint) as caught:
            await pool.request("eth_blockNumber", deadline=1.0)
    finally:
        await pool.aclose()
    text = str(caught.value)
    assert "no RPC endpoint answered eth_blockNumber" in text
    assert "127.0.0.1" in text and "SECRET" not in text


async def test_a_lagging_anvil_is_demoted_until_it_catches_up(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    slow, fast = two_anvils
    await slow.mine(2)
    await fast.mine(20)
    pool = RpcPool(chain(), [slow.url, fast.url], chain_id=8453, policy=POLICY)
    try:
        assert await pool.head() == 20
        latest = await pool.request("eth_getBlockByNumber", ["latest", False])
        assert int(latest["number"], 16) == 20  # served by the fast one
        assert pool.status()[0].demoted == "head 2 is 18 behind the best endpoint (20)"

        await slow.mine(17)
        await pool.probe_heads()
        assert pool.status()[0].demoted is None
        latest = await pool.request("eth_getBlockByNumber", ["latest", False])
        assert int(latest["number"], 16) == 19  # configured order again: the first one
    finally:
        await pool.aclose()


async def test_an_anvil_whose_head_goes_backwards_is_demoted(
    two_anvils: tuple[Anvil, Anvil],
) -> None:
    a, b = two_anvils
    snapshot = await a.rpc("evm_snapshot")
    await asyncio.gather(a.mine(10), b.mine(10))
    pool = RpcPool(chain(), [a.url, b.url], chain_id=8453, policy=POLICY)
    try:
        # The head probe round runs here, in the foreground; a first request would start
        # it in the background, racing the revert below (a stale 10 re-trusts a).
        assert await pool.head() == 10
        assert await pool.request("eth_blockNumber") == "0xa"
        assert await a.rpc("evm_revert", snapshot) is True
        assert await pool.request("eth_blockNumber") == "0x0"  # passed on, and noted
        assert pool.status()[0].demoted == "head went backwards to 0 after 10"
        assert await pool.head() == 10
        block = await pool.request("eth_getBlockByNumber", ["0xa", False])
        assert block is not None and int(block["number"], 16) == 10
    finally:
        await pool.aclose()


async def test_batches_on_anvil_and_the_fallback_to_single_calls(
    two_anvils: tuple[Anvil, Anvil], faults: FaultTransport
) -> None:
    a, b = two_anvils
    await asyncio.gather(a.mine(5), b.mine(5))

    def refuse_batches(request: httpx.Request) -> httpx.Response | None:
        if json.loads(request.content).__class__ is list:
            err = {"code": -32600, "message": "batch requests are not supported"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": err})
        return None

    faults.faults[a.port] = refuse_batches
    # Generous timeouts: the order of calls asserted below must not depend on a loaded
    # machine answering within POLICY's 0.5 s (a slow answer would rotate to b).
    patient = replace(POLICY, timeout=10.0, deadline=30.0)
    pool = RpcPool(chain(), [a.url, b.url], chain_id=8453, transport=faults, policy=patient)
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(6)]
    try:
        blocks = await pool.batch(calls)
        assert [int(blk["number"], 16) for blk in blocks] == list(range(6))
        assert faults.seen[a.port] == ["eth_chainId", "batch[6]", *["eth_getBlockByNumber"] * 6]

        faults.faults[a.port] = lambda _r: httpx.Response(503)
        blocks = await pool.batch(calls)  # a fails: the whole batch goes to b
        assert [int(blk["number"], 16) for blk in blocks] == list(range(6))
        assert faults.seen[b.port] == ["eth_chainId", "batch[6]"]
    finally:
        await pool.aclose()


async def test_429_from_the_provider_sets_anvil_aside_for_its_window(
    two_anvils: tuple[Anvil, Anvil], faults: FaultTransport
) -> None:
    a, b = two_anvils
    faults.faults[a.port] = lambda _r: httpx.Response(429, headers={"retry-after": "5"})
    policy = replace(POLICY, failure_threshold=1)
    pool = RpcPool(chain(), [a.url, b.url], chain_id=8453, transport=faults, policy=policy)
    try:
        for _ in range(4):
            assert await pool.request("eth_blockNumber") == "0x0"
        assert faults.seen[a.port] == ["eth_chainId"]  # once, then left alone
        assert pool.status()[0].circuit == "closed"  # a rate limit is not a breakdown
        assert 0 < pool.status()[0].rate_limited_for <= 5
    finally:
        await pool.aclose()
