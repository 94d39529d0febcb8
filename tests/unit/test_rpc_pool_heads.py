"""The RPC pool at the transport seam: chain identity, heads, batches, Solana, what operators see.

Same fake nodes as ``test_rpc_pool.py``; each test counts what reached each node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.unit.fakenodes import (
    FAST,
    Network,
    Node,
    Pools,
    by_label,
    garbage,
    http_status,
    once,
    refuse_connection,
    sample,
)
from watcher import errors
from watcher.rpc import RpcPool


@pytest.fixture
async def make_pool() -> AsyncIterator[Pools]:
    pools = Pools()
    yield pools
    await pools.aclose()


# ---- chain identity ---------------------------------------------------------------------------


async def test_an_endpoint_on_the_wrong_chain_is_refused_and_the_right_one_used(
    make_pool: Pools,
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
    make_pool: Pools,
) -> None:
    net = Network(a=Node(chain_id=1), b=Node(chain_id=10))
    pool = make_pool(net, "a", "b", chain_id=8453)

    with pytest.raises(errors.NoHealthyEndpoint) as caught:
        await pool.request("eth_blockNumber")

    assert "every RPC endpoint is refused" in str(caught.value)
    assert "chain id 10, expected 8453" in str(caught.value)


async def test_the_chain_check_is_retried_when_the_endpoint_was_only_unreachable(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(fault=once(refuse_connection)), b=Node(chain_id=1))
    pool = make_pool(net, "a", "b", chain_id=8453)

    assert await pool.request("eth_blockNumber") == "0x64"

    assert by_label(pool, "a").refused is None
    assert net["a"].received == ["eth_chainId", "eth_chainId", "eth_blockNumber"]


# ---- heads ------------------------------------------------------------------------------------


async def test_a_lagging_endpoint_is_demoted_and_trusted_again_once_caught_up(
    make_pool: Pools,
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
    make_pool: Pools,
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


async def test_a_follower_asking_only_for_latest_blocks_gets_laggards_demoted(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=120))
    pool = make_pool(net, "a", "b")

    first = await pool.request("eth_getBlockByNumber", ["latest", False])
    for _ in range(200):  # the background probe round: bounded wait, 2 s at most
        if by_label(pool, "a").demoted:
            break
        await asyncio.sleep(0.01)
    second = await pool.request("eth_getBlockByNumber", ["latest", False])

    assert first["number"] == "0x64"  # a answered first: configured order
    assert second["number"] == "0x78"  # then a was found lagging, b took over
    assert by_label(pool, "a").demoted == "head 100 is 20 behind the best endpoint (120)"
    assert net["b"].methods("eth_blockNumber") == 1  # one probe, no more


async def test_a_demoted_endpoint_still_serves_when_no_trusted_one_is_up(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=120))
    pool = make_pool(net, "a", "b", policy=replace(FAST, failure_threshold=1))
    await pool.probe_heads()
    assert by_label(pool, "a").demoted is not None

    net["b"].fault = http_status(500)
    assert await pool.request("eth_chainId") == "0x2105"
    assert net["a"].received[-1] == "eth_chainId"


async def test_head_probes_every_endpoint_only_once_per_interval(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=101))
    pool = make_pool(net, "a", "b")

    assert await pool.head() == 100  # a: the preferred endpoint, within the lag
    assert await pool.head() == 100
    assert await pool.head() == 100

    assert net["a"].methods("eth_blockNumber") == 3
    assert net["b"].methods("eth_blockNumber") == 1  # the one probe round


# ---- batches ----------------------------------------------------------------------------------


async def test_batch_results_come_back_in_call_order(make_pool: Pools) -> None:
    net = Network(a=Node(reverse_batches=True))
    pool = make_pool(net, "a")
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(5)]

    results = await pool.batch(calls)

    assert [r["params"][0] for r in results] == ["0x0", "0x1", "0x2", "0x3", "0x4"]
    assert net["a"].received == ["batch[5]"]


async def test_an_error_object_in_a_batch_raises_its_typed_error_without_retry(
    make_pool: Pools,
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
    make_pool: Pools,
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


async def test_batch_shrinks_to_what_the_endpoint_accepts(make_pool: Pools) -> None:
    net = Network(a=Node(max_batch=3))
    pool = make_pool(net, "a")
    calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(8)]

    results = await pool.batch(calls)

    assert [r["params"][0] for r in results] == [hex(n) for n in range(8)]
    assert net["a"].received == ["batch[8]", "batch[4]", *["batch[2]"] * 4]
    await pool.batch(calls[:4])
    assert net["a"].received[6:] == ["batch[2]", "batch[2]"]  # the limit is remembered


async def test_batch_rotates_as_a_whole_on_transport_failure(make_pool: Pools) -> None:
    net = Network(a=Node(fault=http_status(502)), b=Node())
    pool = make_pool(net, "a", "b")

    results = await pool.batch([("eth_blockNumber", []), ("eth_chainId", [])])

    assert results == ["0x64", "0x2105"]
    assert net["a"].received == ["batch[2]"] and net["b"].received == ["batch[2]"]


# ---- Solana ----------------------------------------------------------------------------------


async def test_solana_pool_checks_the_genesis_hash_and_reads_slots_at_its_commitment(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(genesis="DEVNET", head=5_000), b=Node(genesis="MAINNET", head=5_010))
    pool = make_pool(net, "a", "b", kind="solana", genesis_hash="MAINNET")

    assert await pool.head() == 5_010

    assert by_label(pool, "a").refused == "genesis hash DEVNET, expected MAINNET"
    assert {"commitment": "finalized"} in [p[0] for p in net["b"].params if p]
    assert await pool.head(commitment="confirmed") == 5_010
    assert net["b"].params[-1] == [{"commitment": "confirmed"}]


async def test_a_solana_pool_built_as_evm_tracks_no_slots_as_blocks(make_pool: Pools) -> None:
    net = Network(a=Node(head=5_000), b=Node(head=5_010))
    pool = make_pool(net, "a", "b")  # kind defaults to "evm"

    await pool.request("getSlot", [{"commitment": "finalized"}])
    await pool.request("getSlot", [{"commitment": "finalized"}])

    assert [s.head for s in pool.status()] == [None, None]
    assert net["b"].received == []  # no probe round with eth_blockNumber on Solana nodes


async def test_an_unhealthy_solana_node_is_demoted(make_pool: Pools) -> None:
    net = Network(a=Node(healthy=False, head=5_000), b=Node(head=5_000))
    pool = make_pool(net, "a", "b", kind="solana")

    await pool.probe_heads()
    await pool.request("getSignaturesForAddress", ["owner"])

    assert "Node is behind" in (by_label(pool, "a").demoted or "")
    assert net["b"].methods("getSignaturesForAddress") == 1
    assert net["a"].methods("getSignaturesForAddress") == 0


# ---- what operators see ---------------------------------------------------------------------


async def test_status_and_metrics_describe_each_endpoint(make_pool: Pools) -> None:
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


async def test_urls_with_keys_never_reach_logs_labels_or_errors(make_pool: Pools) -> None:
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


async def test_two_keys_on_one_host_get_distinct_labels(make_pool: Pools) -> None:
    net = Network(a=Node())
    pool = RpcPool(make_pool.chain, ["http://a/k1", "http://a/k2"], transport=net.transport)
    try:
        assert [s.label for s in pool.status()] == ["http://a", "http://a#2"]
    finally:
        await pool.aclose()


async def test_a_probe_answer_older_than_a_head_seen_meanwhile_is_not_applied(
    make_pool: Pools,
) -> None:
    net = Network(a=Node(head=100), b=Node(head=100))
    pool = make_pool(net, "a", "b")
    await pool.probe_heads()
    gate, held = asyncio.Event(), []

    async def hold_one_probe(body: Any) -> httpx.Response | None:
        if body.get("method") == "eth_blockNumber" and not held:
            held.append(net["a"].head)  # the head as it was when asked
            await gate.wait()
            return httpx.Response(
                200, json={"jsonrpc": "2.0", "id": body["id"], "result": hex(held[0])}
            )
        return None

    net["a"].fault = hold_one_probe
    probe = asyncio.create_task(pool.probe_heads())
    for _ in range(200):  # bounded: until the probe is waiting on a's answer
        if held:
            break
        await asyncio.sleep(0.01)
    net["a"].head = 98  # a goes backwards; a request sees it first
    assert await pool.request("eth_blockNumber") == "0x62"
    assert by_label(pool, "a").demoted == "head went backwards to 98 after 100"
    gate.set()
    await probe  # the probe's answer (100) was asked before the 98 was seen
    assert by_label(pool, "a").demoted == "head went backwards to 98 after 100"
