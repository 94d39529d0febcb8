"""The Solana follower against the local node and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY
from solders.keypair import Keypair

from devkit.solana_node import World
from watcher import db, errors, ledger
from watcher.chains import solana
from watcher.settings import Settings, load_settings

MIN = 100_000  # X402_MIN_PAYMENT_USD=0.10


def settings_for(world: World, urls: list[str] | None = None, **kw: Any) -> Settings:
    return load_settings(
        x402_solana_rpc_url=",".join(urls or [world.node.url]),
        x402_solana_payment_address=str(world.merchant.pubkey()),
        x402_solana_usdc_mint=str(world.usdc),
        x402_min_payment_usd="0.10",
        **kw,
    )


def follower(world: World, pool: db.Pool, **kw: Any) -> solana.SolanaFollower:
    urls = kw.pop("urls", None)
    return solana.make_follower(settings_for(world, urls), pool, "solana", poll_interval=0.05, **kw)


async def rows(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(db.q("solana_payments_summary"), "solana")]


async def test_observed_at_confirmed_credited_at_finalized(world: World, pool: db.Pool) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    bank.create_ata(merchant, world.usdc)
    ref = Keypair().pubkey()
    plain = bank.pay(world.alice, world.usdc, merchant, 1_500_000, checked=False)
    checked = bank.pay(world.alice, world.usdc, merchant, 2_000_000, memo="inv-7", references=[ref])
    f = follower(world, pool)
    stats = await f.sync_once()
    assert stats.observed == 2 and stats.credited == 0
    got = {r["tx_hash"]: r for r in await rows(pool)}
    assert {s: r["state"] for s, r in got.items()} == {plain: "observed", checked: "observed"}
    world.node.chain.advance(2)  # finalized catches up
    stats = await f.sync_once()
    assert stats.credited == 2
    got = {r["tx_hash"]: r for r in await rows(pool)}
    assert got[plain]["state"] == got[checked]["state"] == "credited"
    assert int(got[plain]["amount"]) == 1_500_000 and int(got[checked]["amount"]) == 2_000_000
    assert got[checked]["from_address"] == str(world.alice.pubkey())
    assert got[checked]["to_address"] == str(merchant)
    assert got[checked]["token_account"] == str(bank.ata(merchant, world.usdc))
    assert got[checked]["memo"] == "inv-7" and got[checked]["reference_keys"] == [str(ref)]
    assert got[plain]["reference_keys"] == [] and got[plain]["memo"] is None
    await f.sync_once()  # replay: nothing changes
    assert len(await rows(pool)) == 2
    sample = REGISTRY.get_sample_value
    assert sample("watcher_chain_head_block", {"chain": "solana"}) == world.node.chain.tip
    assert (
        sample("watcher_chain_cursor_block", {"chain": "solana"})
        == world.node.chain.by_sig[checked].slot
    )
    await f.rpc.aclose()


async def test_ata_created_in_the_same_transaction_is_credited(world: World, pool: db.Pool) -> None:
    sig = world.bank.pay(world.alice, world.usdc, world.merchant.pubkey(), 700_000, create_ata=True)
    world.node.chain.advance(2)
    f = follower(world, pool)
    await f.sync_once()
    (row,) = await rows(pool)
    assert (row["tx_hash"], row["state"], int(row["amount"])) == (sig, "credited", 700_000)
    await f.rpc.aclose()


async def test_what_must_never_be_credited(world: World, pool: db.Pool) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    bank.create_ata(merchant, world.usdc)
    fake = bank.create_mint(6)  # same decimals, another mint
    bank.mint_to(fake, world.alice.pubkey(), 10**12)
    bank.pay(world.alice, fake, merchant, 5_000_000, create_ata=True)
    failed = bank.failing_payment(world.alice, world.usdc, merchant)
    assert world.node.chain.by_sig[failed].err is not None
    someone = Keypair().pubkey()
    bank.pay(world.alice, world.usdc, someone, 3_000_000, create_ata=True)
    small = bank.pay(world.alice, world.usdc, merchant, MIN - 1)
    # a second (non-associated) USDC account in our name that nobody listed is not followed
    extra = bank.token_account(merchant, world.usdc)
    bank.pay(world.alice, world.usdc, merchant, 1_000_000, to_token_account=extra)
    world.node.chain.advance(2)
    f = follower(world, pool)
    await f.sync_once()
    assert str(extra) not in f.accounts
    got = {r["tx_hash"]: r for r in await rows(pool)}
    assert set(got) == {small}
    assert got[small]["state"] == "below_minimum" and "below the minimum" in got[small]["reason"]
    await f.rpc.aclose()


async def test_dropped_fork_is_orphaned_never_credited(world: World, pool: db.Pool) -> None:
    bank, merchant, chain = world.bank, world.merchant.pubkey(), world.node.chain
    bank.create_ata(merchant, world.usdc)
    chain.advance(2)
    kept = bank.pay(world.alice, world.usdc, merchant, 400_000)
    lost = bank.pay(world.alice, world.usdc, merchant, 900_000)
    f = follower(world, pool)
    await f.sync_once()
    assert {r["state"] for r in await rows(pool)} == {"observed"}
    assert chain.drop_slots(chain.by_sig[lost].slot) == [lost]
    chain.advance(4)
    await f.sync_once()
    await f.sync_once()
    got = {r["tx_hash"]: r for r in await rows(pool)}
    assert got[kept]["state"] == "credited"
    assert got[lost]["state"] == "orphaned" and "dropped fork" in got[lost]["reason"]
    await f.rpc.aclose()


async def test_restart_mid_history_pages_exact_ground_truth(world: World, pool: db.Pool) -> None:
    bank, merchant, node = world.bank, world.merchant.pubkey(), world.node
    bank.create_ata(merchant, world.usdc)
    truth = {bank.pay(world.alice, world.usdc, merchant, MIN + i): MIN + i for i in range(240)}
    node.chain.advance(2)
    node.faults.fail_after = node.faults.requests + 120  # the first watcher "crashes" mid-way
    first = follower(world, pool, page_limit=50, batch_size=20)
    with pytest.raises(errors.RpcError):
        await first.sync_once()
    await first.rpc.aclose()
    partial = await rows(pool)
    assert 0 < len(partial) < len(truth)
    node.faults.fail_after = None
    second = follower(world, pool, page_limit=50, batch_size=20)
    await second.sync_once()
    await second.sync_once()
    final = await rows(pool)
    assert {r["tx_hash"]: int(r["amount"]) for r in final} == truth
    assert len(final) == len(truth)
    assert {r["state"] for r in final} == {"credited"}
    async with pool.acquire() as conn:
        cur = await ledger.get_cursor(conn, "solana", stream=str(bank.ata(merchant, world.usdc)))
    assert cur is not None and cur.hash == list(truth)[-1]
    await second.rpc.aclose()


async def test_daemon_factory(world: World, pool: db.Pool) -> None:
    (f,) = solana.followers(settings_for(world), pool)
    assert f.chain == "solana"
    assert solana.followers(load_settings(x402_solana_rpc_url=world.node.url), pool) == []


async def test_dropped_then_landed_again_is_revived_and_credited_once(
    world: World, pool: db.Pool
) -> None:
    bank, merchant, chain = world.bank, world.merchant.pubkey(), world.node.chain
    dest = bank.create_ata(merchant, world.usdc)
    chain.advance(2)
    tx = bank.tx([bank.transfer_ix(world.alice, world.usdc, dest, 650_000)], [world.alice])
    sig = chain.submit(tx)
    f = follower(world, pool)
    await f.sync_once()
    chain.drop_slots(chain.by_sig[sig].slot)
    chain.advance(3)
    await f.sync_once()
    assert [r["state"] for r in await rows(pool)] == ["orphaned"]
    assert chain.submit(tx) == sig  # same signed transaction lands again, in a new slot
    chain.advance(2)
    await f.sync_once()
    (row,) = await rows(pool)
    assert (row["state"], int(row["amount"]), row["reason"]) == ("credited", 650_000, None)
    await f.rpc.aclose()


async def test_two_watchers_at_once_credit_each_payment_once(world: World, pool: db.Pool) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    bank.create_ata(merchant, world.usdc)
    truth = {bank.pay(world.alice, world.usdc, merchant, MIN + i): MIN + i for i in range(30)}
    world.node.chain.advance(2)
    a = follower(world, pool, batch_size=4)
    b = follower(world, pool, batch_size=7)
    await asyncio.gather(a.sync_once(), b.sync_once())
    await asyncio.gather(a.sync_once(), b.sync_once())
    got = await rows(pool)
    assert {r["tx_hash"]: int(r["amount"]) for r in got} == truth
    assert len(got) == len(truth) and {r["state"] for r in got} == {"credited"}
    async with pool.acquire() as conn:
        credited = await conn.fetchval(
            "SELECT sum(amount) FROM payments WHERE chain = 'solana' AND state = 'credited'"
        )
    assert int(credited) == sum(truth.values())
    await a.rpc.aclose()
    await b.rpc.aclose()


async def test_observed_payment_that_fails_on_the_final_fork_is_not_credited(
    world: World, pool: db.Pool
) -> None:
    bank, merchant, chain = world.bank, world.merchant.pubkey(), world.node.chain
    dest = bank.create_ata(merchant, world.usdc)
    chain.advance(2)
    tx = bank.tx([bank.transfer_ix(world.alice, world.usdc, dest, 650_000)], [world.alice])
    sig = chain.submit(tx)
    f = follower(world, pool)
    await f.sync_once()
    assert [r["state"] for r in await rows(pool)] == ["observed"]
    chain.drop_slots(chain.by_sig[sig].slot)
    # on the fork that wins, alice's USDC is gone first, so the same transaction fails
    bank.pay(world.alice, world.usdc, Keypair().pubkey(), 1_000_000 * 10**6, create_ata=True)
    assert chain.submit(tx, preflight=False) == sig
    assert chain.by_sig[sig].err is not None
    chain.advance(2)
    await f.sync_once()
    (row,) = await rows(pool)
    assert row["state"] == "orphaned" and "pays 0.00 USDC here, not 0.65 USDC" in row["reason"]
    await f.rpc.aclose()


async def test_operator_may_credit_at_confirmed(world: World, pool: db.Pool) -> None:
    bank, merchant = world.bank, world.merchant.pubkey()
    sig = bank.pay(world.alice, world.usdc, merchant, 500_000, create_ata=True)
    settings = settings_for(world, x402_solana_commitment="confirmed")
    f = solana.make_follower(settings, pool, "solana")
    await f.sync_once()  # nothing finalized yet: credited anyway, as configured
    (row,) = await rows(pool)
    assert (row["tx_hash"], row["state"]) == (sig, "credited")
    await f.rpc.aclose()
