"""Requests per second through the RPC pool versus plain httpx, against a local anvil.

    .venv/bin/python scripts/bench_rpc.py [--requests N] [--concurrency C]

Prints one JSON line: sequential and concurrent ``eth_blockNumber`` rates for a
direct ``httpx.AsyncClient`` and for ``RpcPool`` (health, breaker and metrics
bookkeeping included), the rate with a dead endpoint configured first (its
breaker open, so it costs nothing), and the pool's own overhead per request
measured without a network. Rates are medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devkit.anvil import free_port, start_anvil  # the repo root is on sys.path now
from watcher.rpc import Policy, RpcPool

ROUNDS = 5


async def rate(n: int, concurrency: int, call: Callable[[], Awaitable[object]]) -> float:
    """Calls per second for ``n`` calls spread over ``concurrency`` workers."""
    per_worker = n // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - started)


async def overhead_us(n: int) -> float:
    """Pool bookkeeping per request with the network taken out (an in-process transport)."""

    def answer(request: httpx.Request) -> httpx.Response:
        req_id = json.loads(request.content)["id"]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": req_id, "result": "0x1"})

    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    pool = RpcPool("bench-overhead", ["http://node/"], transport=httpx.MockTransport(answer))
    try:
        samples = []
        for _ in range(ROUNDS):
            direct = await rate(n // ROUNDS, 1, lambda: client.post("http://node/", json=body))
            pooled = await rate(n // ROUNDS, 1, lambda: pool.request("eth_blockNumber"))
            samples.append(1e6 / pooled - 1e6 / direct)
        return statistics.median(samples)
    finally:
        await client.aclose()
        await pool.aclose()


async def main(n: int, concurrency: int) -> dict[str, object]:
    node = await start_anvil(chain_id=8453)
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    direct = httpx.AsyncClient(timeout=10)
    pool = RpcPool("bench", [node.url], chain_id=8453)
    dead_first = RpcPool(
        "bench-failover",
        [f"http://127.0.0.1:{free_port()}", node.url],
        chain_id=8453,
        policy=Policy(cooldown=3600.0, failure_threshold=1),
    )

    async def plain() -> object:
        return (await direct.post(node.url, json=body)).json()["result"]

    async def pooled() -> object:
        return await pool.request("eth_blockNumber")

    async def failover() -> object:
        return await dead_first.request("eth_blockNumber")

    try:
        await plain(), await pooled(), await failover()  # warm up connections and checks
        cases = {
            "direct_seq_rps": (1, plain),
            "pool_seq_rps": (1, pooled),
            "direct_concurrent_rps": (concurrency, plain),
            "pool_concurrent_rps": (concurrency, pooled),
            "pool_dead_first_seq_rps": (1, failover),
        }
        # Interleaved rounds, median per case: the machine is shared, load drifts.
        seen: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(ROUNDS):
            for name, (workers, call) in cases.items():
                seen[name].append(await rate(n // ROUNDS, workers, call))
        out: dict[str, object] = {"bench": "rpc", "requests": n, "concurrency": concurrency}
        out.update({name: round(statistics.median(v)) for name, v in seen.items()})
        out["pool_overhead_us_no_network"] = round(await overhead_us(n), 1)
        return out
    finally:
        await direct.aclose()
        await pool.aclose()
        await dead_first.aclose()
        await node.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.requests, args.concurrency))))
