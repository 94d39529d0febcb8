"""A backfill on anvil logs its progress: blocks/s, transfers/s and an ETA, then stops
reporting once the follower is within the confirmation window."""

from __future__ import annotations

from structlog.testing import capture_logs

from devkit.anvil import Anvil, Token
from devkit.evmkit import drain, evm_chain, follower, payments
from watcher import db
from watcher.chains import evm_follower


async def test_backfill_logs_rate_and_eta(anvil: Anvil, usdc: Token, pool: db.Pool) -> None:
    us = anvil.accounts[7]
    await usdc.transfer(anvil.accounts[1], us, 1_000_000)
    await anvil.mine(400)
    await usdc.transfer(anvil.accounts[2], us, 2_000_000)
    await anvil.mine(5)
    head = await anvil.block_number()
    options = evm_follower.Options(progress_interval=0.0, initial_range=8)
    async with follower(evm_chain(anvil, usdc, [us]), pool, options=options) as f:
        with capture_logs() as logs:
            await drain(f)
    reports = [e for e in logs if e["event"] == "backfill_progress"]
    assert len(reports) >= 2, [e["event"] for e in logs]
    for r in reports:
        assert r["chain"] == "base"
        assert r["blocks_per_second"] > 0
        assert r["eta_seconds"] is not None and r["eta_seconds"] >= 0
        assert 0 < r["blocks_done"] <= r["blocks_total"] <= head + 1
    assert [r["blocks_done"] for r in reports] == sorted(r["blocks_done"] for r in reports)
    assert reports[-1]["blocks_done"] >= head - f.window - 8
    assert sum(1 for p in await payments(pool) if p["state"] == "credited") == 2
