"""Benchmark the EVM follower on anvil; prints one JSON line of figures.

    .venv/bin/python scripts/bench_evm.py [--transfers 100000] [--lag-payments 100]

1. backfill: N USDC transfers to our receiving addresses (``batchTransfer``,
   thousands per transaction), then ``watcher run`` is started as an operator
   would (a separate process, websocket configured) and timed from process
   start until all N are credited in PostgreSQL.
2. lag: 100 payments one at a time; time from mining the confirming block to
   the moment the credit is visible in the database (polled every 2 ms, so
   the figure is an upper bound).
3. RPC calls per new block in steady state when nothing is ours: empty blocks,
   and blocks holding USDC transfers to someone else (from the process's own
   ``watcher_rpc_requests_total``).
4. peak RSS of the watcher process (VmHWM).

PostgreSQL: ``DATABASE_URL`` if set, else a private embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.anvil import Anvil, Token, calldata, deploy_token, free_port, start_anvil
from devkit.pg import with_database
from watcher import db

CONFIRMATIONS = 3
PER_TX = 2500


async def fund_and_pay(node: Anvil, usdc: Token, receivers: list[str], n: int) -> None:
    payer = node.accounts[1]
    for acct in node.accounts[1:4]:
        await usdc.mint(acct, 10**15)
    sent = 0
    while sent < n:
        k = min(PER_TX, n - sent)
        tos = [receivers[(sent + j) % len(receivers)] for j in range(k)]
        amounts = [100_000 + (sent + j) % 1000 for j in range(k)]
        data = calldata("batchTransfer(address[],uint256[])", tos, amounts)
        tx = await node.send(payer, usdc.address, data, gas=60_000 + 12_000 * k)
        receipt = await node.receipt(tx, timeout=60)
        if receipt["status"] != "0x1":
            raise RuntimeError("batchTransfer failed")
        sent += k
    await node.mine(CONFIRMATIONS)


async def count_credited(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM payments WHERE state = 'credited'")
    return n


def rpc_calls(metrics_text: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("watcher_rpc_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", status)
    return round(int(m.group(1)) / 1024, 1) if m else -1.0


async def wait_for(predicate: Any, limit: float, poll: float = 0.002) -> float:
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(poll)
    return time.monotonic()


async def measure_lag(
    node: Anvil, usdc: Token, conn: asyncpg.Connection, us: str, n: int
) -> list[float]:
    lags = []
    for i in range(n):
        receipt = await usdc.transfer(node.accounts[2], us, 200_000 + i)
        tx = receipt["transactionHash"]
        if CONFIRMATIONS > 2:
            await node.mine(CONFIRMATIONS - 2)
        await asyncio.sleep(0.05)  # let the follower see the earlier blocks first
        started = time.monotonic()
        await node.mine(1)  # the confirming block

        async def credited(tx: str = tx) -> bool:
            q = "SELECT state FROM payments WHERE tx_hash = $1"
            return await conn.fetchval(q, tx) == "credited"

        lags.append((await wait_for(credited, 10) - started) * 1000)
    return lags


async def steady_state_calls(
    node: Anvil, usdc: Token, conn: asyncpg.Connection, metrics_url: str, blocks: int, busy: bool
) -> float:
    async with httpx.AsyncClient() as client:
        before = rpc_calls((await client.get(metrics_url)).text)
        for _ in range(blocks):
            if busy:  # a USDC transfer to someone else: the block's bloom is not empty
                await usdc.transfer(node.accounts[3], node.accounts[4], 1_000_000)
            else:
                await node.mine(1)
            head = await node.block_number()

            async def caught_up(head: int = head) -> bool:
                q = "SELECT num FROM cursors WHERE chain = 'base'"
                return (await conn.fetchval(q) or 0) >= head

            await wait_for(caught_up, 10)
        await asyncio.sleep(0.2)
        after = rpc_calls((await client.get(metrics_url)).text)
    return round((after - before) / blocks, 2)


async def bench(args: argparse.Namespace, admin_dsn: str) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_dsn, name)
    node = await start_anvil("--gas-limit", "2000000000")
    proc = None
    try:
        conn = await asyncpg.connect(dsn)
        await db.migrate(conn)
        usdc = await deploy_token(node)
        receivers = node.accounts[5:10]
        t = time.monotonic()
        await fund_and_pay(node, usdc, receivers, args.transfers)
        setup_s = time.monotonic() - t
        metrics_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("X402_", "WATCHER_"))},
            "DATABASE_URL": dsn,
            "X402_BASE_RPC_URL": node.url,
            "X402_BASE_WS_URL": node.ws_url,
            "X402_BASE_PAYMENT_ADDRESS": ",".join(receivers),
            "X402_BASE_USDC_ADDRESS": usdc.address,
            "X402_BASE_CHAIN_ID": str(node.chain_id),
            "X402_BASE_CONFIRMATIONS": str(CONFIRMATIONS),
            "X402_BASE_START_BLOCK": "0",
            "WATCHER_METRICS_PORT": str(metrics_port),
            "WATCHER_LOG_LEVEL": "warning",
            "WATCHER_DATA_DIR": tempfile.mkdtemp(prefix="bench-evm-"),
        }
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "watcher", "run", "--no-api", env=env, cwd=ROOT
        )

        async def any_credited() -> bool:
            return await count_credited(conn) > 0

        async def all_credited() -> bool:
            return await count_credited(conn) >= args.transfers

        first = await wait_for(any_credited, 120, poll=0.02)
        done = await wait_for(all_credited, 600, poll=0.02)
        wall = done - started
        lags = await measure_lag(node, usdc, conn, receivers[0], args.lag_payments)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        empty = await steady_state_calls(node, usdc, conn, metrics_url, 40, busy=False)
        busy = await steady_state_calls(node, usdc, conn, metrics_url, 40, busy=True)
        rss = peak_rss_mb(proc.pid)
        credited = await count_credited(conn)
        await conn.close()
        return {
            "bench": "evm",
            "transfers": args.transfers,
            "credited": credited,
            "setup_s": round(setup_s, 2),
            "backfill_wall_s": round(wall, 2),
            "first_credit_s": round(first - started, 2),  # process start, migrations, 1st step
            "transfers_per_s": round(args.transfers / wall),
            "lag_payments": len(lags),
            "lag_p50_ms": round(statistics.median(lags), 1),
            "lag_max_ms": round(max(lags), 1),
            "rpc_calls_per_block_empty": empty,
            "rpc_calls_per_block_others_usdc": busy,
            "peak_rss_mb": rss,
            "confirmations": CONFIRMATIONS,
        }
    finally:
        if proc is not None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 15)
        await node.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--lag-payments", type=int, default=100)
    args = parser.parse_args()
    if os.environ.get("DATABASE_URL"):
        print(json.dumps(asyncio.run(bench(args, os.environ["DATABASE_URL"]))))
        return
    data_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data_dir.chmod(0o755)  # pgserver drops root to its own user, which must reach the dir
    with db.EmbeddedPostgres(data_dir) as dsn:
        print(json.dumps(asyncio.run(bench(args, dsn))))


if __name__ == "__main__":
    main()
