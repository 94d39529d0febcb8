"""The RPC pool against scripted nodes at the transport seam: rotation, retries, breakers.

Each test builds a small network of fake nodes (``tests/unit/fakenodes.py``),
counts what reached each node, and checks what a follower would see: the
answer, the typed error, the status snapshot and the metrics.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.unit.fakenodes import (
    Network,
    Node,
    error,
    garbage,
    hang,
    http_status,
    ok,
    once,
    refuse_connection,
)
from watcher import errors
from watcher.rpc import Policy, RpcPool

FAST = Policy(
    timeout=0.2,
    deadline=3.0,
    max_attempts=3,
    backoff=0.01,
    backoff_max=0.05,
    failure_threshold=2,
    cooldown=0.2,
    head_probe_interval=3600.0,
)

PoolFactory = Callable[..., RpcPool]


@pytest.fixture
def chain() -> str:
    """A chain label of its own, so metric samples of one test never mix with another's."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_pool(chain: str) -> AsyncIterator[PoolFactory]:
    pools: list[RpcPool] = []

    def make(net: Network, *hosts: str, **kw: Any) -> RpcPool:
        kw.setdefault("policy", FAST)
        urls = [f"http://{h}/v2/SECRET-{h}" for h in hosts]
        pool = RpcPool(chain, urls, transport=net.transport, **kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.aclose()


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def by_label(pool: RpcPool, host: str) -> Any:
    return next(s for s in pool.status() if s.label == f"http://{host}")


# ---- rotation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [http_status(500), http_status(503), hang, garbage, refuse_connection],
    ids=["http-500", "http-503", "timeout", "garbage-json", "connection-refused"],
)
async def test_a_failing_endpoint_is_rotated_and_the_request_still_answered(
    make_pool: PoolFactory, fault: Any
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
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(), b=Node(), c=Node())
    pool = make_pool(net, "b", "a", "c")

    for _ in range(3):
        await pool.request("eth_gasPrice")

    assert net["b"].received == ["eth_gasPrice"] * 3
    assert net["a"].received == [] and net["c"].received == []


async def test_an_endpoint_with_recent_failures_goes_behind_a_healthy_one(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(fault=once(http_status(502))), b=Node())
    pool = make_pool(net, "a", "b")

    await pool.request("eth_gasPrice")
    await pool.request("eth_gasPrice")

    assert net["a"].received == ["eth_gasPrice"]  # failed once, then ranked second
    assert net["b"].received == ["eth_gasPrice"] * 2
    assert sample("watcher_rpc_endpoint_healthy", chain=pool.chain, endpoint="http://a") == 0


# ---- rate limits -------------------------------------------------------------------------


async def test_http_429_retry_after_seconds_sets_the_endpoint_aside(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(fault=http_status(429, {"retry-after": "1"})), b=Node())
    pool = make_pool(net, "a", "b")

    await pool.request("eth_gasPrice")
    net["a"].fault = None
    for _ in range(3):
        await pool.request("eth_gasPrice")

    assert net["a"].received == ["eth_gasPrice"]  # skipped for the whole window
    assert net["b"].received == ["eth_gasPrice"] * 4
    assert 0 < by_label(pool, "a").rate_limited_for <= 1
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


async def test_http_429_retry_after_as_an_http_date(make_pool: PoolFactory) -> None:
    when = "Wed, 21 Oct 2099 07:28:00 GMT"  # far future: capped by policy.max_retry_after
    net = Network(a=Node(fault=http_status(429, {"retry-after": when})), b=Node())
    pool = make_pool(net, "a", "b")

    await pool.request("eth_gasPrice")

    assert by_label(pool, "a").rate_limited_for == pytest.approx(FAST.max_retry_after, abs=1)


async def test_json_rpc_rate_limit_error_uses_the_providers_backoff(
    make_pool: PoolFactory,
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
    make_pool: PoolFactory,
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
    make_pool: PoolFactory, code: int, message: str
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
    make_pool: PoolFactory,
) -> None:
    def bad_request(b: Any) -> httpx.Response:
        err = {"code": -32602, "message": "invalid argument 0"}
        return httpx.Response(400, json={"jsonrpc": "2.0", "id": b["id"], "error": err})

    net = Network(a=Node(fault=bad_request), b=Node())
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.RpcResponseError):
        await pool.request("eth_getBalance", ["nope"])
    assert net["b"].received == []


async def test_range_too_large_is_raised_at_once_with_the_suggested_range(
    make_pool: PoolFactory,
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
    make_pool: PoolFactory,
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
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(fault=lambda b: error(b, -32601, "method not found")), b=Node())
    pool = make_pool(net, "a", "b", chain_id=8453)

    assert await pool.request("eth_blockNumber") == "0x64"

    assert by_label(pool, "a").refused == (
        "chain id unknown (eth_chainId answered: method not found), expected 8453"
    )


# ---- circuit breaker ------------------------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_then_half_opens_and_closes(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(fault=http_status(500)), b=Node(fault=http_status(500)))
    pool = make_pool(net, "a", "b")
    circuit = {"a": -1.0}

    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice", deadline=0.15)
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
    make_pool: PoolFactory,
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
    make_pool: PoolFactory,
) -> None:
    policy = replace(FAST, failure_threshold=1, max_attempts=1, cooldown=1.0)
    net = Network(a=Node(fault=http_status(429, {"retry-after": "0.3"})), b=Node())
    net["b"].fault = http_status(500)
    pool = make_pool(net, "a", "b", policy=policy)
    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice")  # a set aside briefly, b's breaker opens
    await asyncio.sleep(0.3)
    net["a"].fault = http_status(500)
    with pytest.raises(errors.NoHealthyEndpoint):
        await pool.request("eth_gasPrice")  # now a's breaker opens too, 0.3 s after b's
    net["a"].fault = net["b"].fault = None

    assert [s.circuit for s in pool.status()] == ["open", "open"]
    assert await pool.request("eth_gasPrice", deadline=2.0) == {
        "method": "eth_gasPrice",
        "params": [],
    }
    assert net["b"].received == ["eth_gasPrice"] * 2  # b, first back, took the probe
    assert net["a"].received == ["eth_gasPrice"] * 2
    assert by_label(pool, "b").circuit == "closed"


async def test_all_breakers_open_beyond_the_deadline_fail_fast_and_say_when(
    make_pool: PoolFactory,
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
    make_pool: PoolFactory,
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


# ---- chain identity ---------------------------------------------------------------------------


async def test_an_endpoint_on_the_wrong_chain_is_refused_and_the_right_one_used(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(chain_id=1), b=Node(chain_id=8453))
    with capture_logs() as logs:
        pool = make_pool(net, "a", "b", chain_id=8453)
        assert await pool.request("eth_blockNumber") == "0x64"
        assert await pool.request("eth_blockNumber") == "0x64"

    assert net["a"].received == ["eth_chainId"]  # asked once, never used
    assert net["b"].received == ["eth_chainId", "eth_blockNumber", "eth_blockNumber"]
    a = by_label(pool, "a")
    assert a.refused == "chain id 1, expected 8453" and not a.healthy
    refused = [e for e in logs if e["event"] == "rpc_endpoint_refused"]
    assert refused == [
        {
            "event": "rpc_endpoint_refused",
            "log_level": "error",
            "chain": pool.chain,
            "endpoint": "http://a",
            "reason": "chain id 1, expected 8453",
        }
    ]
    assert sample("watcher_rpc_endpoint_healthy", chain=pool.chain, endpoint="http://a") == 0


async def test_every_endpoint_on_the_wrong_chain_gives_no_healthy_endpoint(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(chain_id=1), b=Node(chain_id=10))
    pool = make_pool(net, "a", "b", chain_id=8453)

    with pytest.raises(errors.NoHealthyEndpoint) as caught:
        await pool.request("eth_blockNumber")

    assert "every RPC endpoint is refused" in str(caught.value)
    assert "chain id 10, expected 8453" in str(caught.value)


async def test_the_chain_check_is_retried_when_the_endpoint_was_only_unreachable(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(fault=once(refuse_connection)), b=Node(chain_id=1))
    pool = make_pool(net, "a", "b", chain_id=8453)

    assert await pool.request("eth_blockNumber") == "0x64"

    assert by_label(pool, "a").refused is None
    assert net["a"].received == ["eth_chainId", "eth_chainId", "eth_blockNumber"]


# ---- heads ------------------------------------------------------------------------------------


async def test_a_lagging_endpoint_is_demoted_and_trusted_again_once_caught_up(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=120))
    pool = make_pool(net, "a", "b", policy=replace(FAST, max_head_lag=5))

    assert await pool.head() == 120
    await pool.request("eth_getLogs", [{"fromBlock": "0x64", "toBlock": "0x78"}])

    assert by_label(pool, "a").demoted == "head 100 is 20 behind the best endpoint (120)"
    assert net["a"].methods("eth_getLogs") == 0
    assert net["b"].methods("eth_getLogs") == 1
    assert sample("watcher_rpc_endpoint_healthy", chain=pool.chain, endpoint="http://a") == 0

    net["a"].head = 118  # within 5 of the best
    assert await pool.probe_heads() == {"http://a": 118, "http://b": 120}
    await pool.request("eth_getLogs", [{}])
    assert by_label(pool, "a").demoted is None
    assert net["a"].methods("eth_getLogs") == 1  # configured order again


async def test_a_head_going_backwards_through_request_demotes_the_endpoint(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=100))
    pool = make_pool(net, "a", "b")
    assert await pool.request("eth_blockNumber") == "0x64"

    net["a"].head = 98
    assert await pool.request("eth_blockNumber") == "0x62"  # the answer is passed on ...
    assert await pool.head() == 100  # ... but the pool's head comes from b now

    assert by_label(pool, "a").demoted == "head went backwards to 98 after 100"
    assert net["b"].methods("eth_blockNumber") >= 1
    net["a"].head = 101
    await pool.request("eth_blockNumber")  # b answers; a stays demoted until re-probed
    await pool.probe_heads()
    assert by_label(pool, "a").demoted is None


async def test_a_demoted_endpoint_still_serves_when_no_trusted_one_is_up(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=120))
    pool = make_pool(net, "a", "b", policy=replace(FAST, failure_threshold=1))
    await pool.probe_heads()
    assert by_label(pool, "a").demoted is not None

    net["b"].fault = http_status(500)
    assert await pool.request("eth_chainId") == "0x2105"
    assert net["a"].received[-1] == "eth_chainId"


async def test_head_probes_every_endpoint_only_once_per_interval(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=101))
    pool = make_pool(net, "a", "b")

    assert await pool.head() == 100  # a: the preferred endpoint, within the lag
    assert await pool.head() == 100
    assert await pool.head() == 100

    assert net["a"].methods("eth_blockNumber") == 3
    assert net["b"].methods("eth_blockNumber") == 1  # the one probe round


# ---- batches ----------------------------------------------------------------------------------


async def test_batch_results_come_back_in_call_order(make_pool: PoolFactory) -> None:
    net = Network(a=Node(reverse_batches=True))
    pool = make_pool(net, "a")
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(5)]

    results = await pool.batch(calls)

    assert [r["params"][0] for r in results] == ["0x0", "0x1", "0x2", "0x3", "0x4"]
    assert net["a"].received == ["batch[5]"]


async def test_an_error_object_in_a_batch_raises_its_typed_error_without_retry(
    make_pool: PoolFactory,
) -> None:
    def one_reverts(body: Any) -> httpx.Response:
        items = [
            {"jsonrpc": "2.0", "id": b["id"], "result": "0x"}
            if i != 1
            else {"jsonrpc": "2.0", "id": b["id"], "error": {"code": 3, "message": "reverted"}}
            for i, b in enumerate(body)
        ]
        return httpx.Response(200, json=items)

    net = Network(a=Node(fault=one_reverts), b=Node())
    pool = make_pool(net, "a", "b")

    with pytest.raises(errors.RpcResponseError) as caught:
        await pool.batch([("eth_call", [{}]), ("eth_call", [{}]), ("eth_call", [{}])])

    assert caught.value.code == 3
    assert net["b"].received == []


async def test_batch_falls_back_to_single_calls_where_batches_are_refused(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(batches=False))
    pool = make_pool(net, "a")
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(3)]

    first = await pool.batch(calls)
    second = await pool.batch(calls)

    assert first == second
    assert [r["params"][0] for r in first] == ["0x0", "0x1", "0x2"]
    singles = ["eth_getBlockByNumber"] * 3
    assert net["a"].received == ["batch[3]", *singles, *singles]  # refusal learned once


async def test_batch_shrinks_to_what_the_endpoint_accepts(make_pool: PoolFactory) -> None:
    net = Network(a=Node(max_batch=3))
    pool = make_pool(net, "a")
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(8)]

    results = await pool.batch(calls)

    assert [r["params"][0] for r in results] == [hex(n) for n in range(8)]
    assert net["a"].received == ["batch[8]", "batch[4]", *["batch[2]"] * 4]
    await pool.batch(calls[:4])
    assert net["a"].received[6:] == ["batch[2]", "batch[2]"]  # the limit is remembered


async def test_batch_rotates_as_a_whole_on_transport_failure(make_pool: PoolFactory) -> None:
    net = Network(a=Node(fault=http_status(502)), b=Node())
    pool = make_pool(net, "a", "b")

    results = await pool.batch([("eth_blockNumber", []), ("eth_chainId", [])])

    assert results == ["0x64", "0x2105"]
    assert net["a"].received == ["batch[2]"] and net["b"].received == ["batch[2]"]


# ---- Solana ----------------------------------------------------------------------------------


async def test_solana_pool_checks_the_genesis_hash_and_reads_slots_at_its_commitment(
    make_pool: PoolFactory,
) -> None:
    net = Network(a=Node(genesis="DEVNET", head=5_000), b=Node(genesis="MAINNET", head=5_010))
    pool = make_pool(net, "a", "b", kind="solana", genesis_hash="MAINNET")

    assert await pool.head() == 5_010

    assert by_label(pool, "a").refused == "genesis hash DEVNET, expected MAINNET"
    assert {"commitment": "finalized"} in [p[0] for p in net["b"].params if p]
    assert await pool.head(commitment="confirmed") == 5_010
    assert net["b"].params[-1] == [{"commitment": "confirmed"}]


async def test_an_unhealthy_solana_node_is_demoted(make_pool: PoolFactory) -> None:
    net = Network(a=Node(healthy=False, head=5_000), b=Node(head=5_000))
    pool = make_pool(net, "a", "b", kind="solana")

    await pool.probe_heads()
    await pool.request("getSignaturesForAddress", ["owner"])

    assert "Node is behind" in (by_label(pool, "a").demoted or "")
    assert net["b"].methods("getSignaturesForAddress") == 1
    assert net["a"].methods("getSignaturesForAddress") == 0


# ---- what operators see ---------------------------------------------------------------------


async def test_status_and_metrics_describe_each_endpoint(make_pool: PoolFactory) -> None:
    net = Network(a=Node(fault=once(garbage)), b=Node())
    pool = make_pool(net, "a", "b")
    await pool.request("eth_blockNumber")

    a, b = pool.status()
    assert (a.label, a.healthy, a.circuit, a.success_rate) == ("http://a", False, "closed", 0.0)
    assert (b.label, b.healthy, b.head, b.success_rate) == ("http://b", True, 100, 1.0)
    assert b.latency_p50 is not None and b.latency_p50 >= 0
    assert set(b.as_dict()) >= {"label", "healthy", "circuit", "refused", "head", "latency_p50"}

    def count(endpoint: str, outcome: str) -> float | None:
        return sample(
            "watcher_rpc_requests_total",
            chain=pool.chain,
            endpoint=endpoint,
            method="eth_blockNumber",
            outcome=outcome,
        )

    assert count("http://a", "transport") == 1
    assert count("http://b", "ok") == 1
    assert (
        sample("watcher_rpc_request_duration_seconds_count", chain=pool.chain, endpoint="http://b")
        == 1
    )


async def test_urls_with_keys_never_reach_logs_labels_or_errors(make_pool: PoolFactory) -> None:
    net = Network(a=Node(fault=refuse_connection), b=Node(chain_id=1))
    with capture_logs() as logs:
        pool = make_pool(net, "a", "b", chain_id=8453)
        with pytest.raises(errors.NoHealthyEndpoint) as caught:
            await pool.request("eth_blockNumber", deadline=0.5)

    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(logs)
    assert "SECRET" not in repr([s.as_dict() for s in pool.status()])
    labels = [
        s.labels
        for metric in REGISTRY.collect()
        if metric.name.startswith("watcher_rpc")
        for s in metric.samples
    ]
    assert labels and "SECRET" not in repr(labels)


async def test_two_keys_on_one_host_get_distinct_labels(chain: str) -> None:
    net = Network(a=Node())
    pool = RpcPool(chain, ["http://a/k1", "http://a/k2"], transport=net.transport)
    try:
        assert [s.label for s in pool.status()] == ["http://a", "http://a#2"]
    finally:
        await pool.aclose()
