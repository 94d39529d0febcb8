"""kill -9 of a real daemon (`watcher run`) between recording a Solana refund's signed
transaction and its broadcast (sendTransaction held at the RPC seam by the fault proxy):
the restarted daemon re-checks, sends the same bytes, and its follower confirms; the USDC
moves exactly once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from starlette.responses import Response

from devkit.anvil import free_port
from devkit.faultproxy import FaultProxy
from devkit.solana_node import World
from devkit.solana_refundkit import Shop, make_shop, paid_by_bob, refund_row
from watcher import db
from watcher.refunds import store


def daemon_env(shop: Shop, database_url: str, rpc_url: str, tmp: Path) -> dict[str, str]:
    w = shop.world
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X402_", "WATCHER_"))}
    env.update(
        DATABASE_URL=database_url,
        WATCHER_DATA_DIR=str(tmp),
        WATCHER_METRICS_PORT=str(free_port()),
        WATCHER_LOG_FORMAT="json",
        X402_SOLANA_RPC_URL=rpc_url,
        X402_SOLANA_PAYMENT_ADDRESS=str(w.merchant.pubkey()),
        X402_SOLANA_USDC_MINT=str(w.usdc),
        X402_REFUND_SOLANA_KEYPAIR=str(shop.refund),
        X402_REFUND_INTERVAL_SECONDS="1",
    )
    return env


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watcher", "run", "--no-api",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def sent_by(shop: Shop) -> list[str]:
    """Transactions that landed with the refund wallet paying the fee."""
    wallet = str(shop.refund.pubkey())
    recs = shop.world.node.chain.by_address.get(wallet, [])
    return [r.signature for r in recs if r.err is None and r.keys[0] == wallet]


async def test_killed_after_signing_before_broadcast_sends_exactly_once(
    world: World, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    shop = make_shop(world)
    pid = await paid_by_bob(shop, pool, 2_500_000)
    ask = store.Ask(
        payment_id=pid,
        kind="whole",
        reason="crash test",
        operator="bob",
        refund_key="crash-1",
        destination=str(shop.bob.pubkey()),
        proof="source",
        price=100_000,
    )
    async with pool.acquire() as conn:
        row, _ = await store.create(conn, ask)
    rid = int(row["id"])
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_broadcasts(call: dict[str, Any], _: FaultProxy) -> Response | None:
        if call.get("method") == "sendTransaction":
            held.set()
            await release.wait()  # never reaches the node: the process dies first
            return Response("held", status_code=503)
        return None

    proxy = await FaultProxy(world.node.url, world.node.ws_url).start()
    proxy.intercept = hold_broadcasts
    proc = await start(daemon_env(shop, database_url, proxy.url, tmp_path))
    try:
        await asyncio.wait_for(held.wait(), 90)
        signed = await refund_row(pool, rid)
        assert signed["status"] == "signed"
        proc.kill()  # SIGKILL: no cleanup, the broadcast never happened
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        release.set()
        await proxy.stop()
    assert sent_by(shop) == [] and shop.balance(shop.bob.pubkey()) is None
    assert world.node.faults.calls["sendTransaction"] == 0

    proc = await start(daemon_env(shop, database_url, world.node.url, tmp_path))
    try:
        for _ in range(600):  # the restarted sender re-sends; slots pass so the follower confirms
            if (await refund_row(pool, rid))["status"] == "confirmed":
                break
            world.node.chain.advance(1)
            await asyncio.sleep(0.1)
    finally:
        proc.kill()
        await proc.wait()
    after = await refund_row(pool, rid)
    assert after["status"] == "confirmed", after
    assert (after["tx_hash"], after["raw_tx"]) == (signed["tx_hash"], signed["raw_tx"])
    assert after["detail"]["expired"] == []  # the same bytes, never re-signed
    assert sent_by(shop) == [after["tx_hash"]]
    assert shop.balance(shop.bob.pubkey()) == 2_500_000
