"""The `exact` scheme's optional create-associated-token-account instruction (spec §6.2):
CreateIdempotent of our owner's token account for the mint, before the TransferChecked,
funded by the payer. Accepted in exactly that shape; our fee payer never pays the rent nor
signs anything but the fee, and any other account, owner, mint or funder is refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from api.app import create_app
from devkit.api_support import serve
from devkit.solana_node import World as NodeWorld
from devkit.solana_node.helpers import create_ata_ix
from devkit.x402svmkit import (
    PRICE,
    ROUTE,
    World,
    decode_header,
    make_world,
    payment_tx,
    solana_offer,
    v2_header_for,
)
from watcher import db
from watcher.chains import solana

UNITS = 60_000  # creating a token account costs more than the transfer alone


async def settlements(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM x402_solana_settlements ORDER BY id")
        return [dict(r) for r in rows]


async def follow_to_finalized(x402: World, pool: db.Pool) -> list[dict[str, Any]]:
    f = solana.make_follower(x402.settings, pool, "solana", poll_interval=0.05)
    try:
        await f.sync_once()
        x402.node.node.chain.advance(3)
        await f.sync_once()
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM payments ORDER BY id")]


async def pay(x402: World, pool: db.Pool, **bend: Any) -> httpx.Response:
    app = create_app(x402.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        tx = payment_tx(x402, units=UNITS, **bend)
        return await http.get(ROUTE, headers=v2_header_for(offer, tx))


async def test_creating_a_missing_account_settles_and_the_payer_pays_the_rent(
    world: NodeWorld, pool: db.Pool
) -> None:
    fresh = Keypair().pubkey()  # an owner whose token account does not exist yet
    x402 = make_world(world, x402_solana_payment_address=str(fresh))
    assert world.node.chain.svm.get_account(world.bank.ata(fresh, x402.usdc)) is None
    fee_payer_before = x402.lamports(x402.fee_payer.pubkey())
    alice_before = x402.lamports(x402.alice.pubkey())
    create = create_ata_ix(x402.alice.pubkey(), fresh, x402.usdc, idempotent=True)
    resp = await pay(x402, pool, to_owner=fresh, before_transfer=(create,))
    assert resp.status_code == 200, resp.text
    settled = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True
    assert x402.balance(fresh) == PRICE
    # Our fee payer paid two signatures and at most the priority fee (60 000 units at
    # 1 micro-lamport: under 1 lamport), no rent.
    assert fee_payer_before - x402.lamports(x402.fee_payer.pubkey()) - 2 * 5_000 in (0, 1)
    rent = world.node.chain.svm.minimum_balance_for_rent_exemption(165)
    assert alice_before - x402.lamports(x402.alice.pubkey()) == rent  # the payer's rent
    (row,) = await settlements(pool)
    assert (row["status"], row["signature"]) == ("settled", settled["transaction"])
    (payment,) = await follow_to_finalized(x402, pool)  # credited, to the account just made
    assert (payment["tx_hash"], payment["amount"]) == (settled["transaction"], PRICE)
    assert payment["state"] == "claimed" and payment["to_address"] == str(fresh)


async def test_an_existing_account_is_a_no_op_and_the_payment_settles(
    world: NodeWorld, pool: db.Pool
) -> None:
    x402 = make_world(world)
    create = create_ata_ix(x402.alice.pubkey(), x402.owner, x402.usdc, idempotent=True)
    resp = await pay(x402, pool, before_transfer=(create,))
    assert resp.status_code == 200, resp.text
    assert x402.balance(x402.owner) == PRICE
    assert [r["status"] for r in await settlements(pool)] == ["settled"]


def _bad_creates(x402: World, other_mint: Pubkey) -> dict[str, tuple[str, Instruction]]:
    alice, owner, usdc = x402.alice.pubkey(), x402.owner, x402.usdc
    ok = create_ata_ix(alice, owner, usdc, idempotent=True)
    metas = list(ok.accounts)
    stranger = Keypair().pubkey()

    def swapped(i: int, key: Pubkey) -> Instruction:
        bent = [*metas]
        bent[i] = AccountMeta(key, bent[i].is_signer, bent[i].is_writable)
        return Instruction(ok.program_id, ok.data, bent)

    return {
        "another owner's account": (
            "invalid_exact_svm_payload_recipient_mismatch",
            create_ata_ix(alice, stranger, usdc, idempotent=True),
        ),
        "another mint's account": (
            "invalid_exact_svm_payload_recipient_mismatch",
            create_ata_ix(alice, owner, other_mint, idempotent=True),
        ),
        "our account named with another owner": (
            "invalid_exact_svm_payload_recipient_mismatch",
            swapped(2, stranger),
        ),
        "funded by our fee payer": (
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
            create_ata_ix(x402.fee_payer.pubkey(), owner, usdc, idempotent=True),
        ),
        "funded by another signer": (
            "invalid_exact_svm_payload",
            create_ata_ix(stranger, owner, usdc, idempotent=True),
        ),
        "funded by an account that does not sign": (
            "invalid_exact_svm_payload",
            Instruction(ok.program_id, ok.data, [AccountMeta(stranger, False, True), *metas[1:]]),
        ),
        "plain Create, not idempotent": (
            "invalid_exact_svm_payload_no_transfer_instruction",
            create_ata_ix(alice, owner, usdc, idempotent=False),
        ),
        "a seventh account": (
            "invalid_exact_svm_payload_no_transfer_instruction",
            Instruction(ok.program_id, ok.data, [*metas, AccountMeta(stranger, False, True)]),
        ),
        "another program in the system slot": (
            "invalid_exact_svm_payload_recipient_mismatch",
            swapped(4, stranger),
        ),
    }


async def test_every_other_create_is_refused_and_nothing_moves(
    world: NodeWorld, pool: db.Pool
) -> None:
    x402 = make_world(world)
    other_mint = world.bank.create_mint(6)
    cases = _bad_creates(x402, other_mint)
    history = len(world.node.chain.by_sig)
    fee_payer_before = x402.lamports(x402.fee_payer.pubkey())
    app = create_app(x402.settings, pool)
    got: dict[str, str] = {}
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        offer = await solana_offer(http)
        for name, (_, create) in cases.items():
            tx = payment_tx(x402, units=UNITS, before_transfer=(create,))
            resp = await http.get(ROUTE, headers=v2_header_for(offer, tx))
            assert resp.status_code == 402, (name, resp.text)
            got[name] = resp.json()["error"]
    assert got == {name: reason for name, (reason, _) in cases.items()}
    assert await settlements(pool) == []
    assert len(world.node.chain.by_sig) == history  # nothing sent
    assert x402.lamports(x402.fee_payer.pubkey()) == fee_payer_before
    assert x402.balance(x402.owner) == 0


@pytest.mark.parametrize("where", ["after the transfer", "a second one"])
async def test_a_create_anywhere_but_before_the_transfer_is_refused(
    world: NodeWorld, pool: db.Pool, where: str
) -> None:
    x402 = make_world(world)
    create = create_ata_ix(x402.alice.pubkey(), x402.owner, x402.usdc, idempotent=True)
    bend: dict[str, Any] = (
        {"memo": None, "extra": (create,)}
        if where == "after the transfer"
        else {"before_transfer": (create, create)}
    )
    resp = await pay(x402, pool, **bend)
    assert resp.status_code == 402, resp.text
    expected = (
        "invalid_exact_svm_payload_unknown_fourth_instruction"
        if where == "after the transfer"
        else "invalid_exact_svm_payload_unknown_fifth_instruction"  # the transfer, 5th
    )
    assert resp.json()["error"] == expected
    assert await settlements(pool) == []
