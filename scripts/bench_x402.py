#!/usr/bin/env python3
"""Benchmark standard x402 on anvil: the x402 client pays our paid route; prints one JSON line.

For each call: the 402, the client's EIP-3009 signature, then the paid request,
which verifies, claims the nonce, settles with the relayer (anvil automines)
and serves. Reported: p50/p99 of the paid request (verify + settle + serve),
p50 of the whole round trip (402 + sign + paid), and the refusal of a replayed
header (no RPC settlement: a database check).

With ``--chain solana`` the same on the local LiteSVM node: the payer's signed
TransferChecked (built as the x402 SVM client builds it), which we check,
co-sign as fee payer, simulate, claim, send and await at ``confirmed``.

PostgreSQL: the embedded server in a temporary directory.

    .venv/bin/python scripts/bench_x402.py [--calls 50] [--chain base|solana]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.app import create_app
from devkit.anvil import start_anvil
from devkit.api_support import serve
from devkit.x402kit import BASE_CHAIN_ID, PRICE, ROUTE, make_world, v2_header
from watcher import db


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def figures(
    name: str, paid_s: list[float], replay_s: list[float], plain_s: list[float], **extra: Any
) -> dict[str, Any]:
    """The printed line: paid calls against the plain 402 and the replay refusal."""
    return {
        "bench": name,
        "calls": len(paid_s),
        "paid_p50_ms": pct(paid_s, 0.5),
        "paid_p99_ms": pct(paid_s, 0.99),
        **extra,
        "replay_refusal_p50_ms": pct(replay_s, 0.5),
        "plain_402_p50_ms": pct(plain_s, 0.5),
        "paid_mean_ms": round(statistics.mean(paid_s) * 1000, 2),
    }


async def timed_gets(
    http: httpx.AsyncClient, n: int, status: int, headers: dict[str, str] | None = None
) -> list[float]:
    """Seconds for each of ``n`` GETs of the paid route, each answered with ``status``."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = await http.get(ROUTE, headers=headers)
        out.append(time.perf_counter() - t0)
        assert resp.status_code == status, resp.text
    return out


async def bench(dsn: str, calls: int) -> dict[str, Any]:
    pool = await db.create_pool(dsn)
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        async with pool.acquire() as c:
            await db.migrate(c)
        world = await make_world(node)
        await world.token.mint(world.payer.address.lower(), calls * PRICE)
        paid_s: list[float] = []
        round_s: list[float] = []
        app = create_app(world.settings, pool)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            plain_s = await timed_gets(http, min(calls, 50), 402)
            for _ in range(calls):
                start = time.perf_counter()
                header = await v2_header(http, world)
                t0 = time.perf_counter()
                resp = await http.get(ROUTE, headers=header)
                end = time.perf_counter()
                assert resp.status_code == 200, resp.text
                paid_s.append(end - t0)
                round_s.append(end - start)
            replay_s = await timed_gets(http, min(calls, 50), 402, header)
        return figures(
            "x402_exact_anvil", paid_s, replay_s, plain_s, round_trip_p50_ms=pct(round_s, 0.5)
        )
    finally:
        await node.close()
        await pool.close()


async def bench_solana(dsn: str, calls: int) -> dict[str, Any]:
    from devkit.solana_node import SolanaNode, usdc_world
    from devkit.x402svmkit import make_world as make_svm_world
    from devkit.x402svmkit import payment_tx, solana_offer, v2_header_for

    pool = await db.create_pool(dsn)
    node = await SolanaNode(finality_depth=2).start()
    try:
        async with pool.acquire() as c:
            await db.migrate(c)
        world = make_svm_world(usdc_world(node, (calls + 1) * PRICE), fee_payer_sol=10)
        app = create_app(world.settings, pool)
        paid_s: list[float] = []
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            plain_s = await timed_gets(http, min(calls, 50), 402)
            offer = await solana_offer(http)
            for _ in range(calls):
                header = v2_header_for(offer, payment_tx(world))
                t0 = time.perf_counter()
                resp = await http.get(ROUTE, headers=header)
                paid_s.append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.text
            replay_s = await timed_gets(http, min(calls, 50), 402, header)
        assert world.balance(world.owner) == calls * PRICE
        return figures("x402_exact_solana_litesvm", paid_s, replay_s, plain_s)
    finally:
        await node.close()
        await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--chain", choices=("base", "solana"), default="base")
    args = parser.parse_args()
    run = bench_solana if args.chain == "solana" else bench
    with tempfile.TemporaryDirectory() as tmp, db.EmbeddedPostgres(Path(tmp)) as dsn:
        result = asyncio.run(run(dsn, args.calls))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
