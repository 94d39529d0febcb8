"""The local Solana node answers like a real RPC node (shapes, commitment, faults)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
import websockets
from solders.keypair import Keypair

from devkit.solana_node import SendError, SolanaNode, World
from tests import fixtures


async def call(url: str, method: str, params: list[Any] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
        )
    body = resp.json()
    if "error" in body:
        raise RuntimeError(body["error"])
    return body["result"]


async def test_basic_methods(solana: SolanaNode) -> None:
    assert await call(solana.url, "getHealth") == "ok"
    solana.chain.advance(5)
    assert await call(solana.url, "getSlot", [{"commitment": "confirmed"}]) == 5
    assert await call(solana.url, "getSlot") == 3  # finalized by default, 2 behind
    bh = await call(solana.url, "getLatestBlockhash", [{"commitment": "confirmed"}])
    assert set(bh) == {"context", "value"}
    assert set(bh["value"]) == {"blockhash", "lastValidBlockHeight"}
    kp = Keypair()
    sig = await call(solana.url, "requestAirdrop", [str(kp.pubkey()), 10**9])
    assert isinstance(sig, str)
    bal = await call(solana.url, "getBalance", [str(kp.pubkey())])
    assert bal["value"] == 10**9


async def test_send_and_get_transaction_shapes(world: World) -> None:
    node, bank = world.node, world.bank
    ref = Keypair().pubkey()
    bank.create_ata(world.merchant.pubkey(), world.usdc)
    dest = bank.ata(world.merchant.pubkey(), world.usdc)
    ix = bank.transfer_ix(world.alice, world.usdc, dest, 1_500_000, references=[ref])
    tx = bank.tx([ix], [world.alice])
    sig = await call(
        node.url, "sendTransaction", [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}]
    )
    assert sig == str(tx.signatures[0])
    # confirmed sees it at once; finalized does not until 2 more slots
    cfg = {"encoding": "jsonParsed", "maxSupportedTransactionVersion": 0}
    assert await call(node.url, "getTransaction", [sig, cfg]) is None
    got = await call(node.url, "getTransaction", [sig, {**cfg, "commitment": "confirmed"}])
    assert set(got) >= {"blockTime", "meta", "slot", "transaction", "version"}
    assert got["version"] == "legacy"
    meta = got["meta"]
    assert meta["err"] is None and meta["status"] == {"Ok": None}
    assert {
        "fee",
        "innerInstructions",
        "logMessages",
        "preBalances",
        "postBalances",
        "preTokenBalances",
        "postTokenBalances",
        "rewards",
        "computeUnitsConsumed",
    } <= set(meta)
    post = {b["owner"]: b for b in meta["postTokenBalances"]}
    mine = post[str(world.merchant.pubkey())]
    assert mine["mint"] == str(world.usdc)
    assert mine["programId"] == "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
    assert mine["uiTokenAmount"] == {
        "amount": "1500000",
        "decimals": 6,
        "uiAmount": 1.5,
        "uiAmountString": "1.5",
    }
    ix = got["transaction"]["message"]["instructions"][0]
    assert ix["program"] == "spl-token" and ix["parsed"]["type"] == "transferChecked"
    assert ix["parsed"]["info"]["signers"] == [str(ref)]  # Solana Pay reference
    keys = got["transaction"]["message"]["accountKeys"]
    assert set(keys[0]) == {"pubkey", "signer", "source", "writable"}
    # same shape as the mainnet fixture, key by key
    fixture = fixtures.load_solana_fixture(fixtures.DURABLE_NONCE)["result"]
    assert set(got) - {"transactionIndex"} == set(fixture) - {"transactionIndex"}
    assert set(fixture["meta"]) - {"costUnits"} <= set(meta)
    # v0 without maxSupportedTransactionVersion is still legacy here: no "version" field
    plain = await call(node.url, "getTransaction", [sig, {"commitment": "confirmed"}])
    assert "version" not in plain
    assert isinstance(plain["transaction"]["message"]["accountKeys"][0], str)
    node.chain.advance(2)
    assert (await call(node.url, "getTransaction", [sig, cfg]))["slot"] == got["slot"]
    status = await call(node.url, "getSignatureStatuses", [[sig, "1" * 88]])
    assert status["value"][0]["confirmationStatus"] == "finalized"
    assert status["value"][1] is None


async def test_signatures_pagination_and_commitment(world: World) -> None:
    node, bank = world.node, world.bank
    ata = bank.create_ata(world.merchant.pubkey(), world.usdc)
    sigs = [bank.pay(world.alice, world.usdc, world.merchant.pubkey(), 1000 + i) for i in range(7)]
    first = await call(
        node.url, "getSignaturesForAddress", [str(ata), {"commitment": "confirmed", "limit": 3}]
    )
    assert [s["signature"] for s in first] == sigs[::-1][:3]
    assert set(first[0]) == {"signature", "slot", "err", "memo", "blockTime", "confirmationStatus"}
    nxt = await call(
        node.url,
        "getSignaturesForAddress",
        [
            str(ata),
            {
                "commitment": "confirmed",
                "before": first[-1]["signature"],
                "until": sigs[0],
                "limit": 10,
            },
        ],
    )
    assert [s["signature"] for s in nxt] == sigs[::-1][3:6]
    final = await call(node.url, "getSignaturesForAddress", [str(ata)])
    assert sigs[-1] not in [s["signature"] for s in final]  # 2 slots behind


async def test_token_accounts_and_account_info(world: World) -> None:
    node, bank = world.node, world.bank
    owner = str(world.alice.pubkey())
    params: list[Any] = [owner, {"mint": str(world.usdc)}, {"encoding": "jsonParsed"}]
    # alice's account was created and funded in the newest slot: not finalized yet
    assert (await call(node.url, "getTokenAccountsByOwner", params))["value"] == []
    params[2]["commitment"] = "confirmed"
    res = await call(node.url, "getTokenAccountsByOwner", params)
    (item,) = res["value"]
    assert item["pubkey"] == str(bank.ata(world.alice.pubkey(), world.usdc))
    info = item["account"]["data"]["parsed"]["info"]
    assert info["owner"] == owner and info["mint"] == str(world.usdc)
    assert info["tokenAmount"]["amount"] == str(1_000_000 * 10**6)
    assert item["account"]["data"]["program"] == "spl-token"
    node.chain.advance(2)  # now finalized too
    del params[2]["commitment"]
    assert (await call(node.url, "getTokenAccountsByOwner", params))["value"] == res["value"]
    mint = await call(node.url, "getAccountInfo", [str(world.usdc), {"encoding": "jsonParsed"}])
    assert mint["value"]["data"]["parsed"]["type"] == "mint"
    assert mint["value"]["data"]["parsed"]["info"]["decimals"] == 6
    raw = await call(node.url, "getAccountInfo", [item["pubkey"], {"encoding": "base64"}])
    assert len(base64.b64decode(raw["value"]["data"][0])) == 165
    none = await call(node.url, "getAccountInfo", [str(Keypair().pubkey())])
    assert none["value"] is None


async def test_failed_transaction_preflight_and_landed(world: World) -> None:
    bank = world.bank
    bank.create_ata(world.merchant.pubkey(), world.usdc)
    with pytest.raises(SendError, match=r"custom program error: 0x1"):
        bank.pay(world.alice, world.usdc, world.merchant.pubkey(), 10**18)
    sig = bank.failing_payment(world.alice, world.usdc, world.merchant.pubkey())
    rec = world.node.chain.by_sig[sig]
    assert rec.err == {"InstructionError": [0, {"Custom": 1}]}


async def test_dropped_fork_restores_state(world: World) -> None:
    node, bank = world.node, world.bank
    bank.create_ata(world.merchant.pubkey(), world.usdc)
    node.chain.advance(3)
    sig = bank.pay(world.alice, world.usdc, world.merchant.pubkey(), 777)
    slot = node.chain.by_sig[sig].slot
    assert node.chain.drop_slots(slot) == [sig]
    assert await call(node.url, "getTransaction", [sig, {"commitment": "confirmed"}]) is None
    res = await call(
        node.url,
        "getTokenAccountsByOwner",
        [str(world.merchant.pubkey()), {"mint": str(world.usdc)}, {"encoding": "jsonParsed"}],
    )
    assert res["value"][0]["account"]["data"]["parsed"]["info"]["tokenAmount"]["amount"] == "0"


async def test_faults(solana: SolanaNode) -> None:
    solana.faults.fail_next = 1
    async with httpx.AsyncClient(timeout=5) as client:
        body = {"jsonrpc": "2.0", "id": 1, "method": "getSlot"}
        assert (await client.post(solana.url, json=body)).status_code == 500
        assert (await client.post(solana.url, json=body)).status_code == 200
        solana.faults.fail_methods = {"getSlot"}
        assert (await client.post(solana.url, json=body)).json()["error"]["code"] == -32005
        solana.faults.fail_methods = set()
        solana.faults.fail_mode, solana.faults.fail_next = "reset", 1
        with pytest.raises(httpx.TransportError):
            await client.post(solana.url, json=body)


async def test_websocket_subscriptions(world: World) -> None:
    node, bank = world.node, world.bank
    ata = bank.create_ata(world.merchant.pubkey(), world.usdc)
    async with websockets.connect(node.ws_url) as ws:
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "logsSubscribe",
                    "params": [{"mentions": [str(ata)]}, {"commitment": "confirmed"}],
                }
            )
        )
        sub = json.loads(await ws.recv())["result"]
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "accountSubscribe",
                    "params": [str(ata), {"encoding": "jsonParsed", "commitment": "confirmed"}],
                }
            )
        )
        acct_sub = json.loads(await ws.recv())["result"]
        sig = bank.pay(world.alice, world.usdc, world.merchant.pubkey(), 5)
        seen: dict[str, Any] = {}
        async with asyncio.timeout(5):
            while len(seen) < 2:
                note = json.loads(await ws.recv())
                seen[note["method"]] = note["params"]
        assert seen["logsNotification"]["subscription"] == sub
        assert seen["logsNotification"]["result"]["value"]["signature"] == sig
        acct = seen["accountNotification"]
        assert acct["subscription"] == acct_sub
        assert acct["result"]["value"]["data"]["parsed"]["info"]["tokenAmount"]["amount"] == "5"
        assert node.drop_websockets() == 1
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()


async def test_v0_transactions_need_max_supported_version(world: World) -> None:
    from solders.hash import Hash
    from solders.message import MessageV0
    from solders.transaction import VersionedTransaction

    node, bank = world.node, world.bank
    dest = bank.create_ata(world.merchant.pubkey(), world.usdc)
    ix = bank.transfer_ix(world.alice, world.usdc, dest, 250_000)
    blockhash = Hash.from_string(node.chain.latest_block("confirmed").blockhash)
    msg = MessageV0.try_compile(bank.payer.pubkey(), [ix], [], blockhash)
    tx = VersionedTransaction(msg, [bank.payer, world.alice])
    sig = await call(
        node.url, "sendTransaction", [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}]
    )
    with pytest.raises(RuntimeError, match="-32015"):
        await call(node.url, "getTransaction", [sig, {"commitment": "confirmed"}])
    got = await call(
        node.url,
        "getTransaction",
        [
            sig,
            {
                "commitment": "confirmed",
                "encoding": "jsonParsed",
                "maxSupportedTransactionVersion": 0,
            },
        ],
    )
    assert got["version"] == 0
    assert got["transaction"]["message"]["addressTableLookups"] == []
    post = {b["owner"]: b["uiTokenAmount"]["amount"] for b in got["meta"]["postTokenBalances"]}
    assert post[str(world.merchant.pubkey())] == "250000"


async def test_send_base58_default_encoding_and_preflight_errors(world: World) -> None:
    from devkit.solana_node.parse import b58encode

    node, bank = world.node, world.bank
    dest = bank.create_ata(world.merchant.pubkey(), world.usdc)
    tx = bank.tx([bank.transfer_ix(world.alice, world.usdc, dest, 42)], [world.alice])
    sig = await call(node.url, "sendTransaction", [b58encode(bytes(tx))])
    assert sig == str(tx.signatures[0])
    with pytest.raises(RuntimeError, match="already been processed"):
        await call(node.url, "sendTransaction", [b58encode(bytes(tx))])
    too_much = bank.tx([bank.transfer_ix(world.alice, world.usdc, dest, 10**18)], [world.alice])
    with pytest.raises(RuntimeError, match="-32002"):
        await call(node.url, "sendTransaction", [b58encode(bytes(too_much))])
    assert str(too_much.signatures[0]) not in node.chain.by_sig  # preflight: never landed
