"""A Solana refund transaction on the local node (real SPL Token and ATA programs): built,
signed, sent, re-checked; its blockhash expiring; its unsigned export decoded."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from devkit.solana_node import World
from devkit.solana_node.layouts import decode_token_account
from watcher import rpc
from watcher.refunds import solana, solana_export

FUNDS = 50_000_000  # $50 in the refund wallet


@pytest.fixture
async def client(world: World) -> AsyncIterator[rpc.RpcPool]:
    pool = rpc.RpcPool("solana", [world.node.url], kind="solana")
    try:
        yield pool
    finally:
        await pool.aclose()


def refund_wallet(world: World, sol: int = 1) -> Keypair:
    wallet = world.bank.wallet(sol)
    world.bank.mint_to(world.usdc, wallet.pubkey(), FUNDS)
    world.node.chain.finalize_all()
    return wallet


def balance(world: World, owner: Pubkey) -> int | None:
    acct = world.node.chain.svm.get_account(world.bank.ata(owner, world.usdc))
    decoded = decode_token_account(bytes(acct.data)) if acct else None
    return decoded[2] if decoded else None


async def signed_refund(
    client: rpc.RpcPool, world: World, wallet: Keypair, to: Pubkey, amount: int
) -> solana.Signed:
    plan = await solana.plan(client, str(wallet.pubkey()), str(world.usdc), str(to), amount)
    blockhash, last_valid = await solana.latest_blockhash(client)
    return solana.sign(plan, wallet, blockhash, last_valid)


async def test_refund_creates_the_missing_account_and_lands_once(
    world: World, client: rpc.RpcPool
) -> None:
    wallet, payer = refund_wallet(world), Keypair().pubkey()  # the payer never held USDC here
    signed = await signed_refund(client, world, wallet, payer, 1_250_000)
    assert signed.plan.create_account and signed.plan.destination == str(
        world.bank.ata(payer, world.usdc)
    )
    await solana.check_funds(client, signed.plan)
    lamports = world.node.chain.svm.get_account(wallet.pubkey()).lamports
    assert await solana.send(client, signed) is None
    assert await solana.send(client, signed) is None  # the same bytes again: already processed
    assert balance(world, payer) == 1_250_000
    assert balance(world, wallet.pubkey()) == FUNDS - 1_250_000
    rent = world.node.chain.svm.minimum_balance_for_rent_exemption(165)
    paid = lamports - world.node.chain.svm.get_account(wallet.pubkey()).lamports
    assert paid == rent + solana.SIGNATURE_FEE  # the refund wallet paid the rent and the fee
    status = await solana.check(client, signed.signature, signed.last_valid_block_height)
    assert (status.state, status.confirmation, status.final) == ("landed", "confirmed", False)
    world.node.chain.finalize_all()
    status = await solana.check(client, signed.signature, signed.last_valid_block_height)
    assert (status.state, status.confirmation, status.final) == ("landed", "finalized", True)
    assert status.slot == world.node.chain.by_sig[signed.signature].slot
    # Now that it exists, a second refund to the same payer only transfers.
    again = await signed_refund(client, world, wallet, payer, 10)
    assert not again.plan.create_account and len(solana.instructions(again.plan)) == 1
    assert await solana.send(client, again) is None
    assert balance(world, payer) == 1_250_010


async def test_never_landed_is_pending_until_the_blockhash_is_past_finalized(
    world: World, client: rpc.RpcPool
) -> None:
    wallet, payer = refund_wallet(world), Keypair().pubkey()
    signed = await signed_refund(client, world, wallet, payer, 700_000)
    chain = world.node.chain
    # Stored, never sent (a crash before the broadcast): pending while it could still land.
    assert (await solana.check(client, signed.signature, signed.last_valid_block_height)).state == (
        "pending"
    )
    chain.advance(signed.last_valid_block_height - chain.finalized)  # finalized reaches it
    assert chain.finalized == signed.last_valid_block_height
    status = await solana.check(client, signed.signature, signed.last_valid_block_height)
    assert status.state == "pending" and status.block_height == signed.last_valid_block_height
    chain.advance(1)
    status = await solana.check(client, signed.signature, signed.last_valid_block_height)
    assert (status.state, status.final) == ("expired", True)
    refused = await solana.send(client, signed)  # too late: the node refuses, nothing moves
    assert refused is not None and "Blockhash not found" in refused
    assert balance(world, payer) is None
    assert (await solana.check(client, signed.signature, signed.last_valid_block_height)).state == (
        "expired"
    )


async def test_failed_on_chain_is_reported_not_pending(world: World, client: rpc.RpcPool) -> None:
    wallet, payer = refund_wallet(world), Keypair().pubkey()
    signed = await signed_refund(client, world, wallet, payer, FUNDS + 1)  # more than it holds
    with pytest.raises(solana.Unfunded, match="USDC"):
        await solana.check_funds(client, signed.plan)
    refused = await solana.send(client, signed)  # preflight refuses it
    assert refused is not None and "custom program error: 0x1" in refused  # InsufficientFunds
    world.node.chain.submit(signed.raw, preflight=False)  # landed anyway, failing
    status = await solana.check(client, signed.signature, signed.last_valid_block_height)
    assert status.state == "failed" and status.error is not None
    assert balance(world, wallet.pubkey()) == FUNDS


async def test_an_unfunded_wallet_is_named_before_signing(
    world: World, client: rpc.RpcPool
) -> None:
    broke = Keypair()  # no SOL at all
    world.bank.mint_to(world.usdc, broke.pubkey(), FUNDS)
    world.node.chain.finalize_all()
    plan = await solana.plan(
        client, str(broke.pubkey()), str(world.usdc), str(Keypair().pubkey()), 5
    )
    with pytest.raises(solana.Unfunded, match=r"lamports.*rent of the payer's new token account"):
        await solana.check_funds(client, plan)
    with pytest.raises(ValueError, match="refund wallet"):
        solana.sign(plan, Keypair(), "11111111111111111111111111111111", 1)


async def test_export_decodes_to_a_transfer_checked_of_the_exact_amount(
    world: World, client: rpc.RpcPool
) -> None:
    signer = Keypair()  # a hardware wallet: we never see its key
    world.bank.mint_to(world.usdc, signer.pubkey(), FUNDS)
    world.bank.chain.airdrop(signer.pubkey(), 10**9)
    world.node.chain.finalize_all()
    payer = Keypair().pubkey()
    body = await solana_export.export(
        client, str(signer.pubkey()), str(world.usdc), str(payer), 3_456_789
    )
    msg = Message.from_bytes(base64.b64decode(body["message_base64"]))
    keys = list(msg.account_keys)
    assert keys[0] == signer.pubkey() and str(msg.recent_blockhash) == body["recent_blockhash"]
    create, transfer = msg.instructions
    assert keys[create.program_id_index] == solana.ATA_PROGRAM and bytes(create.data) == b"\x01"
    assert keys[transfer.program_id_index] == solana.TOKEN_PROGRAM
    data = bytes(transfer.data)
    assert data[0] == 12 and int.from_bytes(data[1:9], "little") == 3_456_789 and data[9] == 6
    source, mint, dest, authority = (keys[i] for i in transfer.accounts)
    assert (source, mint, authority) == (
        world.bank.ata(signer.pubkey(), world.usdc),
        world.usdc,
        signer.pubkey(),
    )
    assert dest == world.bank.ata(payer, world.usdc) and str(dest) == body["to_token_account"]
    assert [i["kind"] for i in body["instructions"]] == [
        "create_associated_token_account_idempotent",
        "transfer_checked",
    ]
    assert body["instructions"][1]["amount"] == "3456789" and body["fee_payer"] == str(
        signer.pubkey()
    )
    # The signer signs the bytes it was given; the signed transaction lands as is.
    unsigned = Transaction.from_bytes(base64.b64decode(body["transaction_base64"]))
    assert unsigned.message == msg
    signed = Transaction([signer], msg, msg.recent_blockhash)
    world.node.chain.submit(bytes(signed))
    assert balance(world, payer) == 3_456_789
