"""simulateTransaction's switches, as Solana's JSON-RPC documents them: ``sigVerify``
(default false) and ``replaceRecentBlockhash`` (default false; conflicts with sigVerify,
answers ``replacementBlockhash``). Clients estimating compute units (x402-fetch) simulate an
unsigned transaction with a placeholder blockhash this way."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from solders.hash import Hash
from solders.message import Message
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from devkit.solana_node import World, layouts

PLACEHOLDER = Hash.from_bytes(bytes(32))  # what a client puts before it knows a blockhash


async def rpc(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        )
    body: dict[str, Any] = resp.json()
    return body


def unsigned_transfer(world: World, blockhash: Hash) -> str:
    """Alice's USDC transfer to the merchant, her signature slot left empty."""
    bank = world.bank
    bank.create_ata(world.merchant.pubkey(), world.usdc)
    dest = bank.ata(world.merchant.pubkey(), world.usdc)
    ix = bank.transfer_ix(world.alice, world.usdc, dest, 1_000_000)
    message = Message.new_with_blockhash([ix], world.alice.pubkey(), blockhash)
    tx = VersionedTransaction.populate(message, [Signature.default()])
    return base64.b64encode(bytes(tx)).decode()


async def simulate(world: World, tx: str, **cfg: Any) -> dict[str, Any]:
    body = await rpc(world.node.url, "simulateTransaction", [tx, {"encoding": "base64", **cfg}])
    value: dict[str, Any] = body["result"]["value"]
    return value


async def test_replace_recent_blockhash_runs_an_unsigned_transaction_under_the_newest(
    world: World,
) -> None:
    world.node.chain.advance(3)
    tx = unsigned_transfer(world, PLACEHOLDER)
    assert (await simulate(world, tx))["err"] == "BlockhashNotFound"
    value = await simulate(world, tx, replaceRecentBlockhash=True, sigVerify=False)
    assert value["err"] is None, value
    assert value["unitsConsumed"] > 0
    latest = await rpc(world.node.url, "getLatestBlockhash", [{"commitment": "confirmed"}])
    assert value["replacementBlockhash"] == latest["result"]["value"]
    merchant = world.node.chain.svm.get_account(world.bank.ata(world.merchant.pubkey(), world.usdc))
    assert merchant is not None
    assert layouts.decode_token_account(bytes(merchant.data))[2] == 0  # nothing landed


async def test_sig_verify_is_off_by_default_and_checked_when_asked(world: World) -> None:
    tx = unsigned_transfer(world, Hash.from_string(world.node.chain.latest_block(None).blockhash))
    plain = await simulate(world, tx)
    assert plain["err"] is None and plain["replacementBlockhash"] is None
    assert (await simulate(world, tx, sigVerify=True))["err"] == "SignatureFailure"
    await simulate(world, tx, sigVerify=False)
    # The switch is per call: checking signatures again after an unchecked simulation.
    assert (await simulate(world, tx, sigVerify=True))["err"] == "SignatureFailure"


async def test_both_switches_on_is_invalid_params(world: World) -> None:
    tx = unsigned_transfer(world, PLACEHOLDER)
    body = await rpc(
        world.node.url,
        "simulateTransaction",
        [tx, {"encoding": "base64", "sigVerify": True, "replaceRecentBlockhash": True}],
    )
    assert body["error"]["code"] == -32602
