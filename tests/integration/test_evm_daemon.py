"""`watcher run` as an operator starts it against anvil: a payment is credited, SIGTERM is clean."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from devkit.anvil import Anvil, Token, free_port
from devkit.evmkit import payments
from watcher import db


async def test_daemon_follows_the_chain_and_credits_a_payment(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    paid = await usdc.transfer(payer, us, 2_500_000)
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X402_", "WATCHER_"))}
    env.update(
        DATABASE_URL=database_url,
        WATCHER_DATA_DIR=str(tmp_path),
        WATCHER_METRICS_PORT=str(metrics_port),
        WATCHER_LOG_FORMAT="json",
        X402_BASE_RPC_URL=anvil.url,
        X402_BASE_WS_URL=anvil.ws_url,
        X402_BASE_PAYMENT_ADDRESS=us,
        X402_BASE_USDC_ADDRESS=usdc.address,
        X402_BASE_CHAIN_ID=str(anvil.chain_id),
        X402_BASE_CONFIRMATIONS="2",
        X402_BASE_START_BLOCK="0",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher", "run", "--no-api",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await anvil.mine(1)
        deadline = time.monotonic() + 60
        while not [r for r in await payments(pool) if r["state"] == "credited"]:
            assert time.monotonic() < deadline, "not credited in time"
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        assert 'watcher_chain_cursor_block{chain="base"}' in text
        assert 'watcher_payments_total{chain="base",state="credited"} 1.0' in text
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    (row,) = await payments(pool)
    assert (row["tx_hash"], row["amount"], row["state"]) == (
        paid["transactionHash"],
        2_500_000,
        "credited",
    )
    assert b'"followers": ["base"]' in stderr
