"""The local-chain harness: the 6-decimal test token deploys on anvil and emits Transfer logs."""

from __future__ import annotations

from devkit.anvil import TRANSFER_TOPIC, Anvil, Token, calldata


async def test_token_deploys_with_six_decimals(anvil: Anvil, usdc: Token) -> None:
    out = await anvil.rpc(
        "eth_call", {"to": usdc.address, "data": calldata("decimals()")}, "latest"
    )
    assert int(out, 16) == 6
    assert await usdc.balance_of(anvil.accounts[0]) == 1_000_000 * 10**6


async def test_transfer_receipt_shows_the_transfer_log(anvil: Anvil, usdc: Token) -> None:
    payer, receiver = anvil.accounts[1], anvil.accounts[7]
    receipt = await usdc.transfer(payer, receiver, 1_234_567)
    assert receipt["status"] == "0x1"
    (log,) = receipt["logs"]
    assert log["address"].lower() == usdc.address
    assert log["topics"][0] == TRANSFER_TOPIC
    assert log["topics"][1] == "0x" + "00" * 12 + payer[2:]
    assert log["topics"][2] == "0x" + "00" * 12 + receiver[2:]
    assert int(log["data"], 16) == 1_234_567
    assert await usdc.balance_of(receiver) == 1_234_567


async def test_batch_transfer_emits_one_log_per_recipient(anvil: Anvil, usdc: Token) -> None:
    payer, a, b = anvil.accounts[1], anvil.accounts[8], anvil.accounts[9]
    receipt = await usdc.batch_transfer(payer, [a, b, a], [1, 2, 3])
    assert [int(lg["logIndex"], 16) for lg in receipt["logs"]] == [0, 1, 2]
    assert [int(lg["data"], 16) for lg in receipt["logs"]] == [1, 2, 3]
    assert await usdc.balance_of(a) == 4
