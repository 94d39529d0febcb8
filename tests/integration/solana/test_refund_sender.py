"""Solana refunds end to end on the local node: a credited payment refunded by the sender
(requested -> signed -> sent) and confirmed by the real follower when finalized; a crash
between recording and broadcasting, a lost answer and an expired blockhash, each sent
exactly once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devkit import solana_refundkit
from devkit.solana_node import World
from devkit.solana_refundkit import Shop, follow, paid_by_bob, refund_events, refund_row
from watcher import db, rpc
from watcher.refunds import solana_sender, store

PRICE = 100_000


class Crash(BaseException):
    """The process dies here (no handler of ours may catch it)."""


class FaultAt(httpx.AsyncBaseTransport):
    """The RPC seam: ``method`` crashes before it leaves, or its answer is lost after."""

    def __init__(self, method: str, mode: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.method, self.mode, self.hits = method, mode, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"null")
        if isinstance(body, dict) and body.get("method") == self.method and self.hits == 0:
            self.hits += 1
            if self.mode == "crash":
                raise Crash(self.method)
            answer = await self.inner.handle_async_request(request)
            await answer.aread()
            raise httpx.ReadError("connection reset after the request was sent")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def shop(world: World) -> Shop:
    return solana_refundkit.make_shop(world)


async def refund_whole(pool: db.Pool, payment_id: int, to: Pubkey) -> int:
    ask = store.Ask(
        payment_id=payment_id,
        kind="whole",
        reason="the payer asked",
        operator="ops",
        refund_key=store.new_key(),
        destination=str(to),
        proof="source",
        price=PRICE,
    )
    async with pool.acquire() as conn:
        row, made = await store.create(conn, ask)
    assert made
    return int(row["id"])


@pytest.fixture
async def sender(shop: Shop) -> AsyncIterator[solana_sender.SolanaSender]:
    made = solana_sender.sender_for(shop.settings, "solana")
    assert made is not None and made.wallet == str(shop.refund.pubkey())
    try:
        yield made
    finally:
        await made.aclose()


def faulty_sender(shop: Shop, fault: FaultAt) -> solana_sender.SolanaSender:
    secret = shop.settings.refund_solana_secret()
    assert secret is not None
    pool = rpc.RpcPool("solana", [shop.world.node.url], kind="solana", transport=fault)
    return solana_sender.SolanaSender(shop.settings.solana_chain("solana"), secret, pool)


def landed_from(shop: Shop, wallet: Pubkey) -> list[str]:
    """Transactions that landed with ``wallet`` paying the fee (what the sender sends)."""
    chain = shop.world.node.chain
    return [
        r.signature
        for r in chain.by_address.get(str(wallet), [])
        if r.err is None and r.keys[0] == str(wallet)
    ]


async def test_a_refund_arrives_at_a_created_account_and_is_confirmed_by_the_follower(
    shop: Shop, pool: db.Pool, sender: solana_sender.SolanaSender
) -> None:
    pid = await paid_by_bob(shop, pool, 2_300_000)
    rid = await refund_whole(pool, pid, shop.bob.pubkey())
    assert shop.balance(shop.bob.pubkey()) is None  # no associated account yet
    assert await sender.run_once(pool) == 1
    row = await refund_row(pool, rid)
    assert row["status"] == "sent" and row["wallet"] == str(shop.refund.pubkey())
    assert row["detail"]["creates_token_account"] is True and row["detail"]["expired"] == []
    assert shop.balance(shop.bob.pubkey()) == 2_300_000  # the account was created for him
    await follow(shop, pool)
    row = await refund_row(pool, rid)
    assert (row["status"], row["out_tx_hash"]) == ("confirmed", row["tx_hash"])
    assert row["out_block_number"] == shop.world.node.chain.by_sig[row["tx_hash"]].slot
    assert await refund_events(pool, rid) == ["refund.requested", "refund.sent", "refund.confirmed"]
    # the refund itself is no payment, and a later pass changes nothing
    assert (
        await pool.fetchval("SELECT count(*) FROM payments WHERE tx_hash = $1", row["tx_hash"]) == 0
    )
    assert await sender.run_once(pool) == 0
    await follow(shop, pool, passes=1)
    assert landed_from(shop, shop.refund.pubkey()) == [row["tx_hash"]]


async def test_the_receiving_wallet_as_refund_wallet_credits_in_and_never_out(
    world: World, pool: db.Pool
) -> None:
    merchant = world.merchant
    world.bank.chain.airdrop(merchant.pubkey(), 10**9)
    world.bank.create_ata(merchant.pubkey(), world.usdc)
    settings = solana_refundkit.shop_settings(world, x402_refund_solana_keypair=str(merchant))
    shop = Shop(world, settings, merchant, Keypair())
    pid = await paid_by_bob(shop, pool, 1_000_000)
    rid = await refund_whole(pool, pid, shop.bob.pubkey())
    made = solana_sender.sender_for(settings, "solana")
    assert made is not None
    try:
        assert await made.run_once(pool) == 1
    finally:
        await made.aclose()
    later = world.bank.pay(world.alice, world.usdc, merchant.pubkey(), 400_000)
    await follow(shop, pool)
    row = await refund_row(pool, rid)
    assert row["status"] == "confirmed"
    payments = await pool.fetch("SELECT tx_hash, state, amount FROM payments ORDER BY id")
    assert [(p["state"], int(p["amount"])) for p in payments] == [
        ("credited", 1_000_000),
        ("credited", 400_000),
    ]
    assert payments[1]["tx_hash"] == later and row["tx_hash"] not in {
        p["tx_hash"] for p in payments
    }


async def test_a_crash_between_recording_and_sending_sends_once_after_restart(
    shop: Shop, pool: db.Pool, sender: solana_sender.SolanaSender
) -> None:
    pid = await paid_by_bob(shop, pool, 1_500_000)
    rid = await refund_whole(pool, pid, shop.bob.pubkey())
    dying = faulty_sender(shop, FaultAt("sendTransaction", "crash"))
    with pytest.raises(Crash):
        await dying.run_once(pool)
    await dying.aclose()
    row = await refund_row(pool, rid)
    assert row["status"] == "signed" and row["raw_tx"] and row["tx_hash"]
    assert shop.world.node.faults.calls["sendTransaction"] == 0  # it never left
    # restart: the re-check finds nothing, the blockhash lives: the same bytes go out
    await sender.run_once(pool)
    again = await refund_row(pool, rid)
    assert again["status"] == "sent" and again["tx_hash"] == row["tx_hash"]
    assert shop.balance(shop.bob.pubkey()) == 1_500_000
    await follow(shop, pool)
    await sender.run_once(pool)
    assert (await refund_row(pool, rid))["status"] == "confirmed"
    assert landed_from(shop, shop.refund.pubkey()) == [row["tx_hash"]]
    assert shop.balance(shop.bob.pubkey()) == 1_500_000


async def test_a_lost_answer_is_found_landed_not_sent_again(
    shop: Shop, pool: db.Pool, sender: solana_sender.SolanaSender
) -> None:
    pid = await paid_by_bob(shop, pool, 900_000)
    rid = await refund_whole(pool, pid, shop.bob.pubkey())
    lossy = faulty_sender(shop, FaultAt("sendTransaction", "lost"))
    try:
        await lossy.run_once(pool)
    finally:
        await lossy.aclose()
    row = await refund_row(pool, rid)
    assert row["tx_hash"] in landed_from(shop, shop.refund.pubkey())
    await sender.run_once(pool)
    await follow(shop, pool)
    row = await refund_row(pool, rid)
    assert row["status"] == "confirmed" and row["detail"]["expired"] == []
    assert landed_from(shop, shop.refund.pubkey()) == [row["tx_hash"]]
    assert shop.balance(shop.bob.pubkey()) == 900_000


async def test_an_expired_blockhash_is_re_signed_only_past_its_last_valid_height(
    shop: Shop, pool: db.Pool, sender: solana_sender.SolanaSender
) -> None:
    chain = shop.world.node.chain
    pid = await paid_by_bob(shop, pool, 1_100_000)
    rid = await refund_whole(pool, pid, shop.bob.pubkey())
    dying = faulty_sender(shop, FaultAt("sendTransaction", "crash"))
    with pytest.raises(Crash):
        await dying.run_once(pool)
    await dying.aclose()
    first = await refund_row(pool, rid)
    last_valid = first["detail"]["last_valid_block_height"]
    # The blockhash left the node's window, but the finalized height has not passed it:
    # it could still land somewhere, so the same bytes are offered again, never new ones.
    chain.advance(last_valid - chain.finalized)
    assert chain.finalized == last_valid and first["detail"]["blockhash"] not in (
        chain.recent_blockhashes()
    )
    await sender.run_once(pool)
    waiting = await refund_row(pool, rid)
    assert (waiting["status"], waiting["tx_hash"]) == ("signed", first["tx_hash"])
    assert "Blockhash not found" in (waiting["last_error"] or "")
    chain.advance(1)  # now past it: it can never land
    await sender.run_once(pool)
    second = await refund_row(pool, rid)
    assert second["status"] == "sent" and second["tx_hash"] != first["tx_hash"]
    assert second["detail"]["expired"] == [
        {
            "signature": first["tx_hash"],
            "last_valid_block_height": last_valid,
            "finalized_height_seen": last_valid + 1,
        }
    ]
    await follow(shop, pool)
    assert (await refund_row(pool, rid))["status"] == "confirmed"
    assert landed_from(shop, shop.refund.pubkey()) == [second["tx_hash"]]
    assert shop.balance(shop.bob.pubkey()) == 1_100_000
    events = await refund_events(pool, rid)
    assert events == ["refund.requested", "refund.sent", "refund.confirmed"]
