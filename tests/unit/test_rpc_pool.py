"""The RPC pool against scripted nodes at the transport seam: rotation, retries, breakers.

Each test builds a small network of fake nodes (``tests/unit/fakenodes.py``),
counts what reached each node, and checks what a follower would see: the
answer, the typed error, the status snapshot and the metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.unit.fakenodes import (
    FAST,
    Network,
    Node,
    Pools,
    by_label,
    error,
    garbage,
    hang,
    http_status,
    ok,
    once,
    refuse_connection,
    sample,
)
from watcher import errors
from watcher.rpc import Policy


@pytest.fixture
async def make_pool() -> AsyncIterator[Pools]:
    pools = Pools()
    yield pools
    await pools.aclose()


# ---- rotation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [http_status(500), http_status(503), hang, garbage, refuse_connection],
    ids=["http-500", "http-503", "timeout", "garbage-json", "connection-refused"],
)
async def test_a_failing_endpoint_is_rotated_and_the_request_still_answered(
    make_pool: Pools, fault: Any
) -> None:
    net = Network(a=Node(fault=fault), b=Node())
    pool = make_pool(net, "a", "b")

    result = await pool.request("eth_getBalance", ["0xabc", "latest"])

    assert result == {"method": "eth_getBalance", "params": ["0xabc", "latest"]}
    assert net["a"].received == ["eth_getBalance"]
    assert net["b"].received == ["eth_getBalance"]
    assert net["b"].params == [["0xabc", "latest"]]  # the same request, re-sent
    assert by_label(pool, "a").success_rate == 0.0


async def test_configured_order_wins_among_equally_healthy_endpoints(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(), b=Node(), c=Node())
    pool = make_pool(net, "b", "a", "c")

    for _ in range(3):
        await pool.request("eth_gasPrice")

    assert net["b"].received == ["eth_gasPrice"] * 3
    assert net["a"].received == [] and net["c"].received == []


async def test_an_endpoint_with_recent_failures_goes_behind_a_healthy_one(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=once(http_status(502))), b=Node())
    pool = make_pool(net, "a", "b")

    await pool.request("eth_gasPrice")
    await pool.request("eth_gasPrice")

    assert net["a"].received == ["eth_gasPrice"]  # failed once, then ranked second
    assert net["b"].received == ["eth_gasPrice"] * 2
    assert sample("watcher_rpc_endpoint_healthy", chain=pool.chain, endpoint="http://a") == 0


async def test_a_slow_endpoint_goes_behind_a_fast_one(make_pool: Pools) -> None:
    async def slow(_body: Any) -> None:
        await asyncio.sleep(0.3)  # answers, but well above slow_latency

    net = Network(a=Node(fault=slow), b=Node())
    pool = make_pool(net, "a", "b", policy=replace(FAST, timeout=1.0, slow_latency=0.1))

    for _ in range(3):
        assert await pool.request("eth_chainId") == "0x2105"

    assert net["a"].received == ["eth_chainId"]
    assert net["b"].received == ["eth_chainId"] * 2
    a = by_label(pool, "a")
    assert not a.healthy and a.success_rate == 1.0 and (a.latency_p50 or 0) > 0.1


def test_a_policy_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        Policy(failure_threshold=0)


# ---- rate limits -------------------------------------------------------------------------


async def test_http_429_retry_after_seconds_sets_the_endpoint_aside(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=http_status(429, {"retry-after": "5"})), b=Node())
    pool = make_pool(net, "a", "b")

    await pool.request("eth_gasPrice")
    net["a"].fault = None
    for _ in range(3):
        await pool.request("eth_gasPrice")

    assert net["a"].received == ["eth_gasPrice"]  # skipped for the whole window
    assert net["b"].received == ["eth_gasPrice"] * 4
    assert 0 < by_label(pool, "a").rate_limited_for <= 5
    assert (
        sample(
            "watcher_rpc_requests_total",
            chain=pool.chain,
            endpoint="http://a",
            method="eth_gasPrice",
            outcome="rate_limited",
        )
        == 1
    )


async def test_http_429_retry_after_as_an_http_date(make_pool: Pools) -> None:
    when = "Wed, 21 Oct 2099 07:28:00 GMT"  # far future: capped by policy.max_retry_after
    net = Network(a=Node(fault=http_status(429, {"retry-after": when})), b=Node())
    pool = make_pool(net, "a", "b")

    await pool.request("eth_gasPrice")

    assert by_label(pool, "a").rate_limited_for == pytest.approx(FAST.max_retry_after, abs=1)


async def test_json_rpc_rate_limit_error_uses_the_providers_backoff(
    make_pool: Pools,
) -> None:
    infura = {"rate": {"allowed_rps": 10, "backoff_seconds": 30, "current_rps": 13.3}}
    net = Network(
        a=Node(fault=lambda b: error(b, -32005, "project ID request rate exceeded", infura)),
        b=Node(),
    )
    pool = make_pool(net, "a", "b")

    assert await pool.request("eth_blockNumber") == "0x64"

    assert 29 < by_label(pool, "a").rate_limited_for <= 30
    assert net["b"].received == ["eth_blockNumber"]


async def test_a_rate_limited_lone_endpoint_is_waited_for_within_the_deadline(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=once(http_status(429, {"retry-after": "0.3"}))))
    pool = make_pool(net, "a")

    assert await pool.request("eth_blockNumber") == "0x64"
    assert net["a"].received == ["eth_blockNumber"] * 2


# ---- no retry on answers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [(3, "execution reverted"), (-32602, "invalid params"), (-32601, "method not found")],
)
async def test_a_json_rpc_error_answer_is_raised_without_retry(
    make_pool: Pools, code: int, message: str
) -> None:
    net = Network(a=Node(fault=lambda b: error(b, code, message)), b=Node())
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.RpcResponseError) as caught:
        await pool.request("eth_call", [{"to": "0x0"}, "latest"])

    assert caught.value.code == code
    assert message in str(caught.value)
    assert net["a"].received == ["eth_call"]
    assert net["b"].received == []
    assert by_label(pool, "a").healthy  # the node answered: not its fault


async def test_invalid_params_sent_with_http_400_is_still_the_nodes_answer(
    make_pool: Pools,
) -> None:
    def bad_request(b: Any) -> httpx.Response:
        err = {"code": -32602, "message": "invalid argument 0"}
        return httpx.Response(400, json={"jsonrpc": "2.0", "id": b["id"], "error": err})

    net = Network(a=Node(fault=bad_request), b=Node())
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.RpcResponseError):
        await pool.request("eth_getBalance", ["nope"])
    assert net["b"].received == []


async def test_a_revert_behind_a_gateway_answering_http_500_is_still_an_answer(
    make_pool: Pools,
) -> None:
    def gateway(b: Any) -> httpx.Response:
        err = {"code": 3, "message": "execution reverted", "data": "0x08c379a0"}
        return httpx.Response(500, json={"jsonrpc": "2.0", "id": b["id"], "error": err})

    net = Network(a=Node(fault=gateway), b=Node())
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.RpcResponseError) as caught:
        await pool.request("eth_call", [{}, "latest"])
    assert caught.value.code == 3 and caught.value.data == "0x08c379a0"
    assert net["b"].received == []

    def overloaded(b: Any) -> httpx.Response:
        err = {"code": -32603, "message": "internal error"}
        return httpx.Response(500, json={"jsonrpc": "2.0", "id": b["id"], "error": err})

    net["a"].fault = overloaded  # not a verdict on the request: another endpoint may answer
    assert await pool.request("eth_call", [{}, "latest"]) == {
        "method": "eth_call",
        "params": [{}, "latest"],
    }
    assert net["b"].received == ["eth_call"]


async def test_range_too_large_is_raised_at_once_with_the_suggested_range(
    make_pool: Pools,
) -> None:
    text = "query returned more than 10000 results. Try with this block range [0x10, 0x1f]."
    net = Network(a=Node(fault=lambda b: error(b, -32005, text)), b=Node())
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.RangeTooLarge) as caught:
        await pool.request("eth_getLogs", [{"fromBlock": "0x10", "toBlock": "0x100"}])

    assert caught.value.suggested == (16, 31)
    assert net["a"].received == ["eth_getLogs"]
    assert net["b"].received == []


async def test_rotate_codes_send_a_node_that_is_behind_to_the_next_endpoint(
    make_pool: Pools,
) -> None:
    def behind(body: Any) -> httpx.Response:
        return error(body, -32016, "Minimum context slot has not been reached")

    net = Network(a=Node(fault=behind), b=Node())
    rotating = make_pool(net, "a", "b", kind="solana", rotate_codes=(-32016,))
    strict = make_pool(net, "a", "b", kind="solana")

    assert await rotating.request("getBalance", ["owner"]) == {
        "method": "getBalance",
        "params": ["owner"],
    }
    with pytest.raises(errors.RpcResponseError) as caught:
        await strict.request("getBalance", ["owner"])
    assert caught.value.code == -32016
    assert net["b"].received == ["getBalance"]  # only the rotating pool went on to b


async def test_an_endpoint_that_cannot_tell_its_chain_id_is_refused(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=lambda b: error(b, -32601, "method not found")), b=Node())
    pool = make_pool(net, "a", "b", chain_id=8453)

    assert await pool.request("eth_blockNumber") == "0x64"

    assert by_label(pool, "a").refused == (
        "chain id unknown (eth_chainId answered: method not found), expected 8453"
    )


# ---- circuit breaker ------------------------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_then_half_opens_and_closes(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=http_status(500)), b=Node(fault=http_status(500)))
    # Two passes, as many as failure_threshold: each endpoint fails twice, then we stop.
    pool = make_pool(net, "a", "b", policy=replace(FAST, max_attempts=FAST.failure_threshold))
    circuit = {"a": -1.0}

    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice")
    assert [s.circuit for s in pool.status()] == ["open", "open"]
    assert sample("watcher_rpc_circuit_state", chain=pool.chain, endpoint="http://a") == 2
    sent = len(net["a"].received)
    assert sent == FAST.failure_threshold  # open: nothing more was sent

    def recovered(b: Any) -> httpx.Response:
        value = sample("watcher_rpc_circuit_state", chain=pool.chain, endpoint="http://a")
        circuit["a"] = value if value is not None else -1.0
        return ok(b, "0x1")

    net["a"].fault = recovered
    await asyncio.sleep(FAST.cooldown)
    assert await pool.request("eth_gasPrice") == "0x1"

    assert circuit["a"] == 1  # the probe went out half-open
    assert by_label(pool, "a").circuit == "closed"
    assert sample("watcher_rpc_circuit_state", chain=pool.chain, endpoint="http://a") == 0
    assert by_label(pool, "b").circuit == "open"
    assert len(net["b"].received) == FAST.failure_threshold


async def test_a_failed_probe_opens_the_breaker_again_and_only_one_probe_goes_out(
    make_pool: Pools,
) -> None:
    async def slow_failure(_b: Any) -> httpx.Response:
        await asyncio.sleep(0.05)
        return httpx.Response(502)

    net = Network(a=Node(fault=http_status(500)), b=Node())
    net["b"].fault = once(http_status(429, {"retry-after": "0.1"}))
    pool = make_pool(net, "a", "b")
    await pool.request("eth_gasPrice")  # a fails twice while b is set aside, then b answers
    assert by_label(pool, "a").circuit == "open"

    net["a"].fault = slow_failure
    await asyncio.sleep(FAST.cooldown)
    answers = await asyncio.gather(*(pool.request("eth_gasPrice") for _ in range(5)))

    assert len(answers) == 5
    assert len(net["a"].received) == FAST.failure_threshold + 1  # exactly one probe
    assert by_label(pool, "a").circuit == "open"


async def test_when_every_breaker_is_open_the_earliest_to_recover_gets_the_probe(
    make_pool: Pools,
) -> None:
    policy = replace(FAST, failure_threshold=1, max_attempts=1, cooldown=1.5)
    net = Network(a=Node(fault=http_status(429, {"retry-after": "0.5"})), b=Node())
    net["b"].fault = http_status(500)
    pool = make_pool(net, "a", "b", policy=policy)
    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice")  # a set aside briefly, b's breaker opens
    await asyncio.sleep(0.5)
    net["a"].fault = http_status(500)
    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice")  # now a's breaker opens too, 0.5 s after b's
    net["a"].fault = net["b"].fault = None

    assert [s.circuit for s in pool.status()] == ["open", "open"]
    assert await pool.request("eth_gasPrice", deadline=3.0) == {
        "method": "eth_gasPrice",
        "params": [],
    }
    assert net["b"].received == ["eth_gasPrice"] * 2  # b, first back, took the probe
    assert net["a"].received == ["eth_gasPrice"] * 2
    assert by_label(pool, "b").circuit == "closed"


async def test_all_breakers_open_beyond_the_deadline_fail_fast_and_say_when(
    make_pool: Pools,
) -> None:
    policy = replace(FAST, failure_threshold=1, max_attempts=1, cooldown=60.0)
    net = Network(a=Node(fault=http_status(500)))
    pool = make_pool(net, "a", policy=policy)
    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice")

    with pytest.raises(errors.NoHealthyEndpoint) as caught:
        await pool.request("eth_gasPrice", deadline=1.0)

    assert "circuit open (probe in" in str(caught.value)
    assert net["a"].received == ["eth_gasPrice"]


async def test_all_endpoints_down_gives_no_healthy_endpoint_with_a_clear_message(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=refuse_connection), b=Node(fault=http_status(503)))
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.NoHealthyEndpoint) as caught:
        await pool.request("eth_getLogs", [{}], deadline=1.0)

    text = str(caught.value)
    assert pool.chain in text and "eth_getLogs" in text
    assert "http://a" in text and "http://b" in text
    assert "Connection refused" in text or "HTTP 503" in text
    assert "SECRET" not in text
    assert len(net["a"].received) <= FAST.max_attempts
    assert len(net["b"].received) <= FAST.max_attempts


async def test_a_hanging_lone_endpoint_ends_in_no_healthy_endpoint_at_the_deadline(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=hang))
    pool = make_pool(net, "a", policy=replace(FAST, failure_threshold=10))

    with pytest.raises(errors.NoHealthyEndpoint) as caught:
        await pool.request("eth_blockNumber", deadline=0.5)

    assert "no answer within" in str(caught.value)
    assert 1 <= len(net["a"].received) <= FAST.max_attempts
