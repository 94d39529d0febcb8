"""kill -9 between recording a refund's signed transaction and broadcasting it: the
daemon (a real `watcher run` process) restarts, re-checks and sends the same bytes; the
USDC moves exactly once (balances and the Transfer logs from the refund wallet)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from starlette.responses import Response

from devkit import refundkit
from devkit.anvil import TRANSFER_TOPIC, Anvil, Token, free_port
from devkit.faultproxy import FaultProxy
from watcher import db
from watcher.refunds import requests


def daemon_env(w: refundkit.World, database_url: str, rpc_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X402_", "WATCHER_"))}
    env.update(
        DATABASE_URL=database_url,
        WATCHER_DATA_DIR=str(tmp),
        WATCHER_METRICS_PORT=str(free_port()),
        WATCHER_LOG_FORMAT="json",
        X402_BASE_RPC_URL=rpc_url,
        X402_BASE_PAYMENT_ADDRESS=w.receiver,
        X402_BASE_USDC_ADDRESS=w.usdc.address,
        X402_BASE_CHAIN_ID=str(w.anvil.chain_id),
        X402_BASE_CONFIRMATIONS=str(refundkit.CONFIRMATIONS),
        X402_BASE_START_BLOCK="0",
        X402_REFUND_EVM_PRIVATE_KEY="0x" + bytes(w.wallet.key).hex(),
        X402_REFUND_INTERVAL_SECONDS="1",
    )
    return env


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher", "run", "--no-api",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def transfers_from(anvil: Anvil, token: str, wallet: str) -> list[dict[str, Any]]:
    topic = "0x" + "0" * 24 + wallet[2:]
    logs: list[dict[str, Any]] = await anvil.rpc(
        "eth_getLogs",
        {
            "fromBlock": "0x0",
            "toBlock": "latest",
            "address": token,
            "topics": [TRANSFER_TOPIC, topic],
        },
    )
    return logs


async def test_killed_after_signing_before_broadcast_sends_exactly_once(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 3_000_000)
    settings = w.settings()

    async def no_code(chain: str, address: str) -> str:
        return str(await anvil.rpc("eth_getCode", address, "latest"))

    row, _ = await requests.request(
        pool, settings,
        requests.Order(payment_id=pid, kind="whole", reason="crash test", operator="bob"),
        no_code,
    )  # fmt: skip
    rid = int(row["id"])
    before = await usdc.balance_of(w.payer)
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_broadcasts(call: dict[str, Any], _: FaultProxy) -> Response | None:
        if call.get("method") == "eth_sendRawTransaction":
            held.set()
            await release.wait()  # never reaches the node: the process dies first
            return Response("held", status_code=503)
        return None

    proxy = await FaultProxy(anvil.url, anvil.ws_url).start()
    proxy.intercept = hold_broadcasts
    proc = await start(daemon_env(w, database_url, proxy.url, tmp_path))
    try:
        await asyncio.wait_for(held.wait(), 90)
        assert await refundkit.status(pool, rid) == "signed"
        signed = await pool.fetchrow(
            "SELECT tx_hash, raw_tx, nonce FROM refunds WHERE id = $1", rid
        )
        proc.kill()  # SIGKILL: no cleanup, the broadcast never happened
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        release.set()
        await proxy.stop()
    assert await usdc.balance_of(w.payer) == before  # nothing left yet
    assert await transfers_from(anvil, usdc.address, w.wallet_address) == []

    proc = await start(daemon_env(w, database_url, anvil.url, tmp_path))
    try:
        for _ in range(600):  # the restarted sender re-sends; mine so the follower confirms
            if await refundkit.status(pool, rid) == "confirmed":
                break
            await anvil.mine(1)
            await asyncio.sleep(0.1)
    finally:
        proc.kill()
        await proc.wait()
    after = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", rid)
    assert after["status"] == "confirmed", dict(after)
    assert (after["tx_hash"], after["raw_tx"], after["nonce"]) == tuple(signed)  # same bytes
    assert await usdc.balance_of(w.payer) == before + 3_000_000
    moved = await transfers_from(anvil, usdc.address, w.wallet_address)
    assert len(moved) == 1 and moved[0]["transactionHash"] == after["tx_hash"]
