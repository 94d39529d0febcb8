"""Holds on Solana (issue 16): the fee payer is screened as well as the source owner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.solana_node import World
from tests.integration.solana.test_follower import follower, rows
from watcher import db
from watcher.screening import core


class Listed:
    def __init__(self, *addresses: str) -> None:
        self.addresses = set(addresses)

    def lookup(self, address: str) -> str | None:
        return "the test list" if address in self.addresses else None


@pytest.fixture(autouse=True)
def default_screen() -> Iterator[None]:
    yield
    core.install(core.Screen())


async def test_a_listed_fee_payer_holds_the_payment(world: World, pool: db.Pool) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    bank.create_ata(merchant, world.usdc)
    fee_payer = str(bank.payer.pubkey())
    sig = bank.pay(world.alice, world.usdc, merchant, 1_500_000)
    world.node.chain.advance(2)
    core.install(core.Screen(denylist=Listed(fee_payer)))
    f = follower(world, pool)
    try:
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    (row,) = await rows(pool)
    assert (row["tx_hash"], row["state"]) == (sig, "held")
    assert row["reason"] == f"fee_payer {fee_payer} is on the test list"
    stored = await pool.fetchrow("SELECT from_address, tx_sender FROM payments")
    assert (stored["from_address"], stored["tx_sender"]) == (str(world.alice.pubkey()), fee_payer)


async def test_an_unlisted_payment_is_credited_with_its_fee_payer_recorded(
    world: World, pool: db.Pool
) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    bank.create_ata(merchant, world.usdc)
    bank.pay(world.alice, world.usdc, merchant, 1_500_000)
    world.node.chain.advance(2)
    core.install(core.Screen(denylist=Listed("nobody")))
    f = follower(world, pool)
    try:
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    (row,) = await rows(pool)
    assert row["state"] == "credited"
    sender = await pool.fetchval("SELECT tx_sender FROM payments")
    assert sender == str(bank.payer.pubkey())
