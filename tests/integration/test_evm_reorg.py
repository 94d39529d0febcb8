"""Reorgs made by anvil_reorg: orphaned payments never credit; deep ones are flagged, not lost."""

from __future__ import annotations

from prometheus_client import REGISTRY

from devkit.anvil import Anvil, Token, calldata
from devkit.evmkit import drain, evm_chain, follower, payments
from watcher import db


def _transfer_tx(usdc: Token, sender: str, to: str, amount: int) -> dict[str, str]:
    return {
        "from": sender,
        "to": usdc.address,
        "data": calldata("transfer(address,uint256)", to, amount),
        "gas": hex(200_000),
    }


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_payment_reorged_out_below_confirmations_is_orphaned_and_replacement_credited_once(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, other_payer, us = anvil.accounts[1], anvil.accounts[2], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], confirmations=5)
    lost = await usdc.transfer(payer, us, 5_000_000)
    block = int(lost["blockNumber"], 16)
    await anvil.mine(1)
    reorgs_before = _metric("watcher_reorgs_total", chain="base")
    async with follower(chain, pool) as f:
        await drain(f)
        (row,) = await payments(pool)
        assert row["state"] == "observed"
        # Replace the last two blocks; the new first block carries another payment.
        replacement = _transfer_tx(usdc, other_payer, us, 6_000_000)
        await anvil.rpc("anvil_reorg", 2, [[replacement, 0]])
        assert await anvil.rpc("eth_getTransactionReceipt", lost["transactionHash"]) is None
        await anvil.mine(5)
        await drain(f)
        await drain(f)  # a second pass changes nothing
    rows = {r["tx_hash"]: r for r in await payments(pool)}
    assert rows[lost["transactionHash"]]["state"] == "orphaned"
    assert rows[lost["transactionHash"]]["credited_at"] is None
    assert "reorged out" in rows[lost["transactionHash"]]["reason"]
    (new,) = [r for h, r in rows.items() if h != lost["transactionHash"]]
    assert (new["state"], new["amount"]) == ("credited", 6_000_000)
    assert new["from_address"] == other_payer
    assert new["block_number"] == block
    assert _metric("watcher_reorgs_total", chain="base") == reorgs_before + 1


async def test_reorg_deeper_than_confirmations_flags_the_credit_and_keeps_it(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    chain = evm_chain(anvil, usdc, [us], confirmations=2)
    paid = await usdc.transfer(payer, us, 3_000_000)
    await anvil.mine(2)
    flagged_before = _metric("watcher_credited_reorged_total", chain="base")
    async with follower(chain, pool) as f:
        await drain(f)
        (row,) = await payments(pool)
        assert row["state"] == "credited"
        await anvil.rpc("anvil_reorg", 4, [])  # the payment's block is gone for good
        await anvil.mine(1)
        await drain(f)
    (row,) = await payments(pool)
    assert row["tx_hash"] == paid["transactionHash"]
    assert row["state"] == "credited" and row["reorged_after_credit"] is True
    assert "reorged out" in row["reason"]
    assert _metric("watcher_credited_reorged_total", chain="base") == flagged_before + 1
