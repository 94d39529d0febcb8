"""`watcher run` with Solana configured: its follower credits a payment; SIGTERM stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from devkit.solana_node import World
from tests.integration.solana.test_follower import rows
from watcher import db


async def test_daemon_runs_the_solana_follower(
    world: World, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    sig = bank.pay(world.alice, world.usdc, merchant, 1_234_567, create_ata=True)
    world.node.chain.advance(2)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=database_url,
        WATCHER_METRICS_PORT="0",
        WATCHER_LOG_FORMAT="json",
        WATCHER_DATA_DIR=str(tmp_path / "data"),
        X402_SOLANA_RPC_URL=world.node.url,
        X402_SOLANA_WS_URL=world.node.ws_url,
        X402_SOLANA_PAYMENT_ADDRESS=str(merchant),
        X402_SOLANA_USDC_MINT=str(world.usdc),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "run",
        "--no-api",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while True:
                if [r for r in await rows(pool) if r["state"] == "credited"]:
                    break
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    (row,) = await rows(pool)
    assert (row["tx_hash"], int(row["amount"])) == (sig, 1_234_567)
    assert b"solana" in err  # the daemon logged its follower
