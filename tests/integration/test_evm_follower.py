"""The EVM follower on a real anvil and a real PostgreSQL: what gets credited, and when."""

from __future__ import annotations

import asyncio

from devkit.anvil import Anvil, Token, artifact, calldata, deploy_token
from devkit.evmkit import cursor, drain, evm_chain, follower, payments
from watcher import db
from watcher.chains import evm_follower


async def test_credited_after_exactly_n_confirmations_not_one_block_earlier(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], confirmations=4)
    receipt = await usdc.transfer(payer, us, 1_234_567)
    block = int(receipt["blockNumber"], 16)
    async with follower(chain, pool) as f:
        for depth in range(1, 4):  # the payment's block is `depth` deep: not yet
            await drain(f)
            assert await cursor(pool) == block + depth - 1
            (row,) = await payments(pool)
            assert row["state"] == "observed", f"credited at depth {depth}"
            await anvil.mine(1)
        await drain(f)  # depth 4 = confirmations
    (row,) = await payments(pool)
    assert row["state"] == "credited"
    assert row["credited_at"] is not None
    assert (row["amount"], row["from_address"], row["to_address"]) == (1_234_567, payer, us)
    assert (row["block_number"], row["block_hash"]) == (block, receipt["blockHash"])
    assert (row["tx_hash"], row["log_index"]) == (receipt["transactionHash"], 0)
    assert row["token"] == usdc.address and row["block_time"] is not None


async def test_only_usdc_nonzero_transfers_to_us_count_each_log_its_own_payment(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us, them = anvil.accounts[1], anvil.accounts[7], anvil.accounts[8]
    fake = await deploy_token(anvil, "USD Coin", "USDC")  # same name, same event, other contract
    await fake.mint(payer, 10**12)
    await fake.transfer(payer, us, 5_000_000)  # wrong token
    await usdc.transfer(payer, us, 0)  # zero value
    await usdc.transfer(payer, them, 7_000_000)  # not ours
    await usdc.transfer(payer, us, 99_999)  # below the $0.10 minimum
    batch = await usdc.batch_transfer(payer, [us, them, us], [2_000_000, 3_000_000, 4_000_000])
    await anvil.mine(3)
    async with follower(evm_chain(anvil, usdc, [us], confirmations=3), pool) as f:
        await drain(f)
    rows = await payments(pool)
    got = [(r["tx_hash"], r["log_index"], r["amount"], r["state"]) for r in rows]
    tx = batch["transactionHash"]
    assert got[-2:] == [(tx, 0, 2_000_000, "credited"), (tx, 2, 4_000_000, "credited")]
    (below,) = got[:-2]
    assert below[2:] == (99_999, "below_minimum")
    assert all(r["token"] == usdc.address and r["to_address"] == us for r in rows)


async def test_replay_and_restart_credit_nothing_twice(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], confirmations=2)
    for amount in (1_000_000, 2_000_000):
        await usdc.transfer(payer, us, amount)
    await anvil.mine(2)
    for _ in range(2):
        async with follower(chain, pool) as f:
            await drain(f)
    async with pool.acquire() as conn:  # forget the cursor: a full re-scan from block 0
        await conn.execute("DELETE FROM cursors")
    async with follower(chain, pool) as f:
        await drain(f)
    rows = await payments(pool)
    assert [(r["amount"], r["state"]) for r in rows] == [
        (1_000_000, "credited"),
        (2_000_000, "credited"),
    ]


async def test_nft_style_and_malformed_transfer_logs_from_the_token_are_ignored(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    tx = await anvil.send(anvil.accounts[0], None, artifact("OddLogs")["bytecode"], gas=1_000_000)
    odd = Token(anvil, (await anvil.receipt(tx))["contractAddress"].lower())  # as "the USDC"
    for call in (
        calldata("nftTransfer(address,address,uint256)", payer, us, 5_000_000),
        calldata("shortTransfer(address,address)", payer, us),
        calldata("transfer(address,address,uint256)", payer, us, 2_000_000),
    ):
        receipt = await anvil.receipt(await anvil.send(payer, odd.address, call, gas=100_000))
        assert receipt["status"] == "0x1" and len(receipt["logs"]) == 1
    await anvil.mine(3)
    async with follower(evm_chain(anvil, odd, [us], confirmations=3), pool) as f:
        await drain(f)
    rows = await payments(pool)
    assert [(r["amount"], r["state"]) for r in rows] == [(2_000_000, "credited")]
    assert rows[0]["tx_hash"] == receipt["transactionHash"]


async def test_more_receivers_than_a_topic_filter_holds_are_matched_locally(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us, them = anvil.accounts[1], anvil.accounts[7], anvil.accounts[8]
    many = [f"0x{i:040x}" for i in range(1, 300)] + [us]
    chain = evm_chain(anvil, usdc, many, confirmations=2)
    mine = await usdc.batch_transfer(payer, [them, us, many[5], them], [1, 3_000_000, 4_000_000, 5])
    await anvil.mine(2)
    async with follower(chain, pool, options=evm_follower.Options(topic_limit=10)) as f:
        assert f.topics is None  # one eth_getLogs for every USDC Transfer, matched in a set
        await drain(f)
    rows = await payments(pool)
    assert [(r["log_index"], r["to_address"], r["state"]) for r in rows] == [
        (1, us, "credited"),
        (2, many[5], "credited"),
    ]
    assert {r["tx_hash"] for r in rows} == {mine["transactionHash"]}


async def test_until_block_waits_for_that_block_then_returns(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    target = await anvil.block_number() + 3
    chain = evm_chain(anvil, usdc, [us], confirmations=2)
    async with follower(chain, pool, options=evm_follower.Options(poll_interval=0.02)) as f:
        task = asyncio.create_task(f.run(asyncio.Event(), until_block=target))
        await usdc.transfer(payer, us, 1_000_000)
        await asyncio.sleep(0.2)
        assert not task.done()  # the chain has not reached the block yet
        await anvil.mine(3)
        await asyncio.wait_for(task, 30)
    assert await cursor(pool) >= target
    assert [r["state"] for r in await payments(pool)] == ["credited"]
