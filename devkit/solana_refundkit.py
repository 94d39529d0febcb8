"""What the Solana refund tests share: a shop on the local node (receiving wallet, a
refund wallet with SOL and USDC, a payer whose associated token account does not exist),
its settings, the real follower's passes, and the refund rows and events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devkit.solana_node import World
from devkit.solana_node.layouts import decode_token_account
from watcher import db
from watcher.chains import solana
from watcher.settings import Settings, load_settings

FUNDS = 50_000_000  # $50 in the refund wallet


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


def make_shop(world: World, **kw: Any) -> Shop:
    """A refund wallet with 1 SOL and $50 (its keypair configured, unless ``kw`` says
    otherwise) and the merchant's token account."""
    refund = world.bank.wallet(1)
    world.bank.mint_to(world.usdc, refund.pubkey(), FUNDS)
    world.bank.create_ata(world.merchant.pubkey(), world.usdc)
    settings = shop_settings(world, **(kw or {"x402_refund_solana_keypair": str(refund)}))
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
