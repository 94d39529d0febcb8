"""Benchmark the Solana follower on the local LiteSVM node. Prints one JSON line.

    python scripts/bench_solana.py [--transfers 5000] [--lag-payments 100]

1. ``--transfers`` USDC transfers land on the local node and finalize; then a
   follower starts on an empty ledger: ``seconds_to_credit_all`` runs from the
   follower's start (a cold start on that history, pages of 1000) until every
   transfer is credited; ``process_seconds_to_credit_all`` runs from process
   start (includes PostgreSQL start and landing the transfers).
2. With the follower live (websocket hints, polling fallback), ``--lag-payments``
   payments are made one by one; each is finalized and the time from
   finalization to the committed credit (PostgreSQL ``credited_at``) is taken.
3. ``peak_rss_mib``: peak resident memory of this process (node + follower +
   client; PostgreSQL runs in its own processes).

Everything binds 127.0.0.1; the run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROCESS_START = time.monotonic()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solders.keypair import Keypair

from devkit.solana_node import Bank, SolanaNode
from watcher import db, logs
from watcher.chains import solana
from watcher.settings import load_settings

COUNT_CREDITED = "SELECT count(*) FROM payments WHERE chain = 'solana' AND state = 'credited'"
CREDITED_AT = "SELECT credited_at FROM payments WHERE chain = 'solana' AND tx_hash = $1"


async def wait_count(pool: db.Pool, n: int, limit_s: float) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            async with pool.acquire() as conn:
                if await conn.fetchval(COUNT_CREDITED) >= n:
                    return
            await asyncio.sleep(0.02)


async def bench(args: argparse.Namespace, dsn: str) -> dict[str, object]:
    pool = await db.create_pool(dsn, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await db.migrate(conn)
    node = SolanaNode(finality_depth=2)
    await node.start()
    bank = Bank(node.chain)
    usdc = bank.create_mint(6)
    payers = [bank.wallet(100) for _ in range(4)]
    for p in payers:
        bank.mint_to(usdc, p.pubkey(), 10**15)
    merchant = Keypair().pubkey()
    bank.create_ata(merchant, usdc)
    t0 = time.monotonic()
    for i in range(args.transfers):
        bank.pay(payers[i % len(payers)], usdc, merchant, 100_000 + i, checked=i % 2 == 0)
    land_s = time.monotonic() - t0
    node.chain.advance(2)
    settings = load_settings(
        x402_solana_rpc_url=node.url,
        x402_solana_ws_url=node.ws_url,
        x402_solana_payment_address=str(merchant),
        x402_solana_usdc_mint=str(usdc),
    )
    follower = solana.make_follower(settings, pool, "solana", poll_interval=0.5)
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(follower.run(stop))
    try:
        await wait_count(pool, args.transfers, args.timeout)
        cold_s = time.monotonic() - started
        process_s = time.monotonic() - PROCESS_START
        lags = []
        for i in range(args.lag_payments):
            sig = bank.pay(payers[0], usdc, merchant, 200_000 + i)
            node.chain.advance(2)
            finalized_at = datetime.now(UTC)
            await wait_count(pool, args.transfers + i + 1, 30)
            async with pool.acquire() as conn:
                credited_at = await conn.fetchval(CREDITED_AT, sig)
            lags.append((credited_at - finalized_at).total_seconds())
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await node.close()
        await pool.close()
    lags.sort()
    return {
        "bench": "solana",
        "transfers": args.transfers,
        "land_transfers_seconds": round(land_s, 3),
        "seconds_to_credit_all": round(cold_s, 3),
        "process_seconds_to_credit_all": round(process_s, 3),
        "credits_per_second": round(args.transfers / cold_s, 1),
        "lag_payments": len(lags),
        "credit_lag_after_finalization_p50_ms": round(statistics.median(lags) * 1000, 1),
        "credit_lag_after_finalization_p95_ms": round(lags[int(len(lags) * 0.95) - 1] * 1000, 1),
        "credit_lag_after_finalization_max_ms": round(lags[-1] * 1000, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--transfers", type=int, default=5000)
    p.add_argument("--lag-payments", type=int, default=100)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--database-url", help="default: an embedded PostgreSQL in a temp dir")
    args = p.parse_args()
    logs.configure("warning", "json")
    if args.database_url:
        print(json.dumps(asyncio.run(bench(args, args.database_url))))
        return
    with tempfile.TemporaryDirectory() as tmp, db.EmbeddedPostgres(Path(tmp)) as dsn:
        print(json.dumps(asyncio.run(bench(args, dsn))))


if __name__ == "__main__":
    main()
