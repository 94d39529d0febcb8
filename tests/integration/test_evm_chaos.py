"""Chaos: thousands of payments, random reorgs (some deeper than the confirmations) with the
dropped transactions broadcast again, kill -9 of the follower process, RPC faults.

At the end the ledger must equal the canonical chain walked from genesis: every
confirmed transfer to us credited (or below_minimum) exactly once at its final place,
nothing credited that is not there, and a flag only on payments whose transfer is
gone from the chain.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from devkit.anvil import Anvil, Token, calldata, free_port
from devkit.evmkit import Signer, canonical_transfers, cursor, payments
from devkit.faultproxy import FaultProxy
from tests.integration.test_daemon_ops import _start
from watcher import db

CONF = 2  # _start configures X402_BASE_CONFIRMATIONS=2
ROUNDS = 36
SIGNERS = 4
SEED = 20261201


def _tx(rng: random.Random, signer: Signer, receivers: list[str], stranger: str) -> str:
    """A signed payment: one transfer, or a batch (duplicates and dust among them)."""
    if rng.random() < 0.3:
        to = rng.choice(receivers)
        return signer.sign(calldata("transfer(address,uint256)", to, rng.randint(100_000, 900_000)))
    n = rng.randint(4, 24)
    tos = [rng.choice([*receivers, *receivers, stranger]) for _ in range(n)]
    amounts = [rng.choice([157, 250_000, rng.randint(100_000, 2_000_000)]) for _ in range(n)]
    data = calldata("batchTransfer(address[],uint256[])", tos, amounts)
    return signer.sign(data, gas=120_000 + 45_000 * n)


async def _receipt(anvil: Anvil, tx_hash: str) -> dict[str, Any] | None:
    got: dict[str, Any] | None = await anvil.rpc("eth_getTransactionReceipt", tx_hash)
    return got


async def _after_reorg(
    rng: random.Random,
    anvil: Anvil,
    signers: list[Signer],
    sent: dict[int, list[tuple[str, str]]],
    receivers: list[str],
) -> None:
    """Dropped transactions: each signer's are broadcast again (in nonce order, behind a
    higher-fee transfer to us so their positions move) or abandoned (nonces reused)."""
    await anvil.rpc("evm_setAutomine", False)
    try:
        for i, s in enumerate(signers):
            dropped = [(h, raw) for h, raw in sent[i] if await _receipt(anvil, h) is None]
            if not dropped:
                continue
            if rng.random() < 0.75:
                for _h, raw in dropped:
                    await anvil.rpc("eth_sendRawTransaction", raw)
            else:
                s.nonce = int(
                    await anvil.rpc("eth_getTransactionCount", s.account.address, "latest"), 16
                )
                sent[i] = [(h, raw) for h, raw in sent[i] if (h, raw) not in dropped]
        await anvil.rpc(
            "eth_sendTransaction",
            {
                "from": anvil.accounts[1],
                "to": anvil.accounts[0],
                "value": "0x1",
                "gasPrice": hex(80 * 10**9),
            },
        )
        await anvil.rpc(
            "eth_sendTransaction",
            {
                "from": anvil.accounts[2],
                "to": signers[0].token.address,
                "data": calldata("transfer(address,uint256)", rng.choice(receivers), 333_333),
                "gas": hex(200_000),
                "gasPrice": hex(90 * 10**9),
            },
        )
        await anvil.mine(1)
    finally:
        await anvil.rpc("evm_setAutomine", True)


def _kill(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    if proc is not None and proc.stderr is not None:
        proc.stderr.close()


async def _caught_up(pool: db.Pool, head: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while (await cursor(pool) or -1) < head:
        assert time.monotonic() < deadline, f"follower stuck at {await cursor(pool)} < {head}"
        await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_ledger_equals_the_canonical_chain_after_chaos(
    tmp_path: Path, anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str
) -> None:
    rng = random.Random(SEED)
    us, stranger = anvil.accounts[7], anvil.accounts[9]
    receivers = [us]  # the daemon's X402_BASE_PAYMENT_ADDRESS
    signers = [Signer(anvil, usdc) for _ in range(SIGNERS)]
    for s in signers:
        await s.fund(10**12, settle_blocks=0)
    await anvil.mine(16)  # funding stays below every reorg
    proxy = await FaultProxy(anvil.url, anvil.ws_url, seed=SEED).start()
    proxy.fault, proxy.fault_rate = "500", 0.15
    sent: dict[int, list[tuple[str, str]]] = {i: [] for i in range(SIGNERS)}
    proc: subprocess.Popen[str] | None = None
    kills = reorgs = deep = 0
    try:
        for _ in range(ROUNDS):
            if proc is None or proc.poll() is not None:
                _kill(proc)
                proc = _start(
                    tmp_path, anvil, usdc, database_url, free_port(), X402_BASE_RPC_URL=proxy.url
                )
            await anvil.rpc("evm_setAutomine", False)
            try:
                for i, s in enumerate(signers):
                    for _ in range(rng.randint(1, 2)):
                        raw = _tx(rng, s, receivers, stranger)
                        sent[i].append(((await s.broadcast(raw)), raw))
                await anvil.mine(rng.randint(1, 2))
            finally:
                await anvil.rpc("evm_setAutomine", True)
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            if rng.random() < 0.4:
                depth = rng.randint(1, CONF + 5)
                await anvil.rpc("anvil_reorg", depth, [])
                reorgs, deep = reorgs + 1, deep + (depth >= CONF)
                await _after_reorg(rng, anvil, signers, sent, receivers)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0.0, 1.5))
                _kill(proc)
                proc, kills = None, kills + 1
        _kill(proc)
        proxy.fault = None
        await anvil.mine(CONF + 2)
        head = await anvil.block_number()
        proc = _start(tmp_path, anvil, usdc, database_url, free_port(), X402_BASE_RPC_URL=proxy.url)
        await _caught_up(pool, head)
        await asyncio.sleep(1.0)  # one more idle pass: nothing may change after the head
    finally:
        _kill(proc)
        await proxy.stop()
    assert reorgs >= 8 and deep >= 4 and kills >= 5  # the seed makes a real campaign

    confirmed_to = head - CONF + 1
    truth = await canonical_transfers(anvil, usdc, receivers, confirmed_to)
    rows = await payments(pool)
    live = [
        r
        for r in rows
        if r["state"] in ("credited", "claimed", "below_minimum") and not r["reorged_after_credit"]
    ]
    ledger = sorted(
        (r["tx_hash"], r["log_index"], r["block_number"], int(r["amount"]))
        for r in live
        if r["block_number"] <= confirmed_to
    )
    assert len(truth) >= 1000
    print(
        f"chaos: {len(truth)} transfers confirmed, {len(rows)} rows, {reorgs} reorgs "
        f"({deep} at least {CONF} deep), {kills} kill -9, {proxy.faults_served} RPC faults"
    )
    missing = Counter(truth) - Counter(ledger)
    extra = Counter(ledger) - Counter(truth)
    assert not missing and not extra, (sorted(missing)[:5], sorted(extra)[:5])
    # Nothing credited above the confirmed depth, and every flag is a transfer really gone.
    assert not [
        r for r in live if r["block_number"] > confirmed_to and r["state"] != "below_minimum"
    ]
    for r in rows:
        if r["reorged_after_credit"]:  # its transaction is not (successfully) on the chain
            receipt = await _receipt(anvil, r["tx_hash"])
            assert receipt is None or receipt["status"] == "0x0", r
    below = {(t[0], t[1]) for t in truth if t[3] < 100_000}
    assert all(
        r["state"] == "below_minimum" for r in live if (r["tx_hash"], r["log_index"]) in below
    )
