"""Crash safety: a follower cancelled at random points in a backfill loses and doubles nothing."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from devkit.anvil import Anvil, Token
from devkit.evmkit import cursor, drain, evm_chain, follower, payments
from watcher import db
from watcher.chains import evm_follower

TRANSFERS_PER_TX = 100
TXS = 30
MAX_CRASHES = 25


@pytest.mark.slow
async def test_cancelled_at_random_points_then_restarted_credits_exactly_the_ground_truth(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer = anvil.accounts[1]
    us, us2, them = anvil.accounts[7], anvil.accounts[8], anvil.accounts[9]
    truth: set[tuple[str, int, int]] = set()
    for i in range(TXS):
        tos = [(us, us2, them)[j % 3] for j in range(TRANSFERS_PER_TX)]
        amounts = [100_000 + i * 1000 + j for j in range(TRANSFERS_PER_TX)]
        receipt = await usdc.batch_transfer(payer, tos, amounts)
        for lg in receipt["logs"]:
            index = int(lg["logIndex"], 16)
            if tos[index] != them:
                truth.add((receipt["transactionHash"], index, int(lg["data"], 16)))
        if i % 3 == 0:
            await anvil.mine(2)  # some empty blocks between payments
    await anvil.mine(3)
    head = await anvil.block_number()
    chain = evm_chain(anvil, usdc, [us, us2], confirmations=3)
    # Small steps so a backfill of ~2,000 payments takes many transactions to cancel inside.
    opts = evm_follower.Options(
        initial_range=1, max_range=4, target_logs=150, window_margin=4, tip_batch=3
    )
    rng = random.Random(20261126)
    crashes = 0
    while crashes < MAX_CRASHES and (await cursor(pool) or 0) < head:
        async with follower(chain, pool, options=opts) as f:
            task = asyncio.create_task(f.run(asyncio.Event(), burst=True))
            await asyncio.sleep(rng.uniform(0.0, 0.12))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        crashes += 1
        credited = {
            (r["tx_hash"], r["log_index"], int(r["amount"]))
            for r in await payments(pool, state="credited")
        }
        assert credited <= truth  # never a credit that did not happen
    assert crashes >= 3, "the backfill finished before it could be interrupted"
    async with follower(chain, pool, options=opts) as f:
        await drain(f)
    rows = await payments(pool)
    got = [(r["tx_hash"], r["log_index"], int(r["amount"])) for r in rows]
    assert len(got) == len(set(got)) == len(truth)
    assert set(got) == truth
    assert {r["state"] for r in rows} == {"credited"}
    assert await cursor(pool) == head
