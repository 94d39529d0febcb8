"""Solana refunds end to end on the local node: a credited payment refunded by the sender
(requested -> signed -> sent) and confirmed by the real follower when finalized; a crash
between recording and broadcasting, a lost answer and an expired blockhash, each sent
exactly once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devkit.solana_node import World
from devkit.solana_node.layouts import decode_token_account
from watcher import db, rpc
from watcher.chains import solana
from watcher.refunds import solana_sender, store
from watcher.settings import Settings, load_settings

PRICE = 100_000
FUNDS = 50_000_000


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


@dataclass
class Shop:
    world: World
    settings: Settings
    refund: Keypair
    bob: Keypair  # pays from a token account that is not his associated one

    def balance(self, owner: Pubkey) -> int | None:
        acct = self.world.node.chain.svm.get_account(self.world.bank.ata(owner, self.world.usdc))
        decoded = decode_token_account(bytes(acct.data)) if acct else None
        return decoded[2] if decoded else None


def shop_settings(world: World, **kw: Any) -> Settings:
    return load_settings(
        x402_solana_rpc_url=world.node.url,
        x402_solana_payment_address=str(world.merchant.pubkey()),
        x402_solana_usdc_mint=str(world.usdc),
        x402_min_payment_usd="0.10",
        **kw,
    )


@pytest.fixture
def shop(world: World) -> Shop:
    refund = world.bank.wallet(1)
    world.bank.mint_to(world.usdc, refund.pubkey(), FUNDS)
    world.bank.create_ata(world.merchant.pubkey(), world.usdc)
    settings = shop_settings(world, x402_refund_solana_keypair=str(refund))
    return Shop(world, settings, refund, Keypair())


async def follow(shop: Shop, pool: db.Pool, passes: int = 2) -> None:
    f = solana.make_follower(shop.settings, pool, "solana", poll_interval=0.05)
    try:
        for _ in range(passes):
            shop.world.node.chain.finalize_all()
            await f.sync_once()
    finally:
        await f.rpc.aclose()


async def paid_by_bob(shop: Shop, pool: db.Pool, amount: int) -> int:
    """Bob pays the merchant from a second token account (his associated one never exists)."""
    w, bank = shop.world, shop.world.bank
    source = bank.token_account(shop.bob.pubkey(), w.usdc)
    bank.pay(w.alice, w.usdc, shop.bob.pubkey(), amount, to_token_account=source)
    dest = bank.ata(w.merchant.pubkey(), w.usdc)
    sig = bank.send([bank.transfer_ix(shop.bob, w.usdc, dest, amount, source=source)], [shop.bob])
    await follow(shop, pool)
    row = await pool.fetchrow(
        "SELECT id, state, from_address FROM payments WHERE tx_hash = $1", sig
    )
    assert row is not None and row["state"] == "credited", row
    assert row["from_address"] == str(shop.bob.pubkey())
    return int(row["id"])


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


async def refund_row(pool: db.Pool, rid: int) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", rid)
    assert row is not None
    out = dict(row)
    out["detail"] = json.loads(out["detail"]) if out["detail"] else None
    return out


async def refund_events(pool: db.Pool, rid: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT type FROM events WHERE resource_id = $1 ORDER BY id", f"ref_{rid}"
    )
    return [r["type"] for r in rows]


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
    settings = shop_settings(world, x402_refund_solana_keypair=str(merchant))
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
