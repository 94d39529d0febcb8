"""A deny-listed Solana x402 payer is refused before we co-sign or broadcast (issue 16): the
spec's 402 `payer_denied`, our fee payer's SOL and the payer's USDC untouched, no
settlement row; a clean payer through the same app still settles (local LiteSVM node)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from solders.instruction import AccountMeta, Instruction

from api.app import create_app
from devkit.api_support import serve
from devkit.solana_node import World as NodeWorld
from devkit.solana_node.helpers import TOKEN_PROGRAM_ID
from devkit.x402svmkit import (
    NETWORK,
    PRICE,
    ROUTE,
    client_v2_header,
    decode_header,
    make_world,
    payment_tx,
    solana_offer,
    v2_header_for,
)
from watcher import db
from watcher.screening import core


@pytest.fixture(autouse=True)
def process_screen() -> Iterator[None]:
    """create_app installs the process's screen: give the next test the one it found."""
    before = core.current()
    yield
    core.install(before)


async def test_a_deny_listed_payer_is_refused_before_our_fee_payer_pays(
    world: NodeWorld, pool: db.Pool, tmp_path: Path
) -> None:
    deny = tmp_path / "deny.txt"
    x402 = make_world(world, x402_denylist_file=str(deny))
    deny.write_text(f"# the payer of this test\n{x402.alice.pubkey()}\n")
    clean = world.bank.wallet(1)
    world.bank.mint_to(x402.usdc, clean.pubkey(), 10 * PRICE)
    app = create_app(x402.settings, pool)
    fee_payer = x402.lamports(x402.fee_payer.pubkey())
    alice_usdc = x402.balance(x402.alice.pubkey())
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get(ROUTE, headers=await client_v2_header(http, x402))
        assert x402.lamports(x402.fee_payer.pubkey()) == fee_payer  # no fee spent
        offer = await solana_offer(http)
        tx = payment_tx(x402, payer=clean)
        paid = await http.get(ROUTE, headers=v2_header_for(offer, tx))
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert body["error"] == "payer_denied" and str(x402.alice.pubkey()) in body["message"]
    failed = decode_header(refused.headers["PAYMENT-RESPONSE"])
    assert failed["success"] is False and failed["errorReason"] == "payer_denied"
    assert failed["transaction"] == "" and failed["network"] == NETWORK
    assert x402.balance(x402.alice.pubkey()) == alice_usdc
    assert paid.status_code == 200, paid.text
    assert x402.balance(clean.pubkey()) == 9 * PRICE
    rows = await pool.fetch("SELECT payer, status FROM x402_solana_settlements")
    assert [(r["payer"], r["status"]) for r in rows] == [(str(clean.pubkey()), "settled")]


async def test_a_delegate_spending_a_listed_owners_account_is_refused_too(
    world: NodeWorld, pool: db.Pool, tmp_path: Path
) -> None:
    """The listed owner approves a clean key as delegate of its token account; the
    delegate signs the transfer. Only the authority is in the transaction: the source's
    owner cannot be screened before settling, so it is refused (nothing settles)."""
    deny = tmp_path / "deny.txt"
    x402 = make_world(world, x402_denylist_file=str(deny))
    deny.write_text(f"{x402.alice.pubkey()}\n")
    delegate = world.bank.wallet(1)
    source = world.bank.ata(x402.alice.pubkey(), x402.usdc)
    approve = Instruction(
        TOKEN_PROGRAM_ID,
        bytes([4]) + (10 * PRICE).to_bytes(8, "little"),  # Approve(amount)
        [
            AccountMeta(source, False, True),
            AccountMeta(delegate.pubkey(), False, False),
            AccountMeta(x402.alice.pubkey(), True, False),
        ],
    )
    world.bank.send([approve], [x402.alice])
    alice_usdc = x402.balance(x402.alice.pubkey())
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        tx = payment_tx(x402, payer=x402.alice, authority=delegate)
        paid = await http.get(ROUTE, headers=v2_header_for(offer, tx))
    assert paid.status_code == 402, paid.text
    assert paid.json()["error"] == "payer_unscreened"
    assert str(source) in paid.json()["message"]
    assert x402.balance(x402.alice.pubkey()) == alice_usdc
    assert await pool.fetchval("SELECT count(*) FROM x402_solana_settlements") == 0
