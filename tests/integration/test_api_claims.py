"""Claims are bound to the payer: a hash alone claims nothing; one payment, one token."""

from __future__ import annotations

import asyncio

from eth_abi.abi import encode
from eth_account import Account
from solders.keypair import Keypair

from devkit.anvil import Anvil, Token, artifact, calldata
from devkit.api_support import (
    BASE_RECEIVER,
    SOLANA_MINT,
    SOLANA_OWNER,
    app_for,
    client,
    evm_sign,
    follow_receipt,
    record_payment,
    solana_sign,
)
from watcher import db

CLAIM = "/x402/generate-token"
PAID = "/x402/example/paid"


async def test_front_runner_with_only_the_hash_cannot_claim(pool: db.Pool) -> None:
    payer, thief = Account.create(), Account.create()
    _, tx = await record_payment(pool, from_address=payer.address.lower(), amount=2_500_000)
    async with client(app_for(pool)) as http:
        no_proof = await http.post(CLAIM, json={"chain": "base", "tx_hash": tx})
        assert no_proof.status_code == 422
        forged = await http.post(
            CLAIM,
            json={"chain": "base", "tx_hash": tx, "signature": evm_sign(thief, "base", tx)},
        )
        assert forged.status_code == 403 and forged.json()["error"] == "signature_mismatch"
        junk = await http.post(CLAIM, json={"chain": "base", "tx_hash": tx, "signature": "0x12"})
        assert junk.status_code == 403
        ok = await http.post(
            CLAIM,
            json={"chain": "base", "tx_hash": tx, "signature": evm_sign(payer, "base", tx)},
        )
        assert ok.status_code == 201, ok.text
        body = ok.json()
        assert body["requests"] == 25 and body["remaining"] == 25
        paid = await http.get(PAID, headers={"x-payment-token": body["token"]})
        assert paid.status_code == 200 and paid.json()["remaining"] == 24
    stored = await pool.fetchrow("SELECT token_hash, payer FROM access_tokens")
    assert stored["payer"] == payer.address.lower() and len(stored["token_hash"]) == 32


async def test_respelled_hash_and_replayed_claim(pool: db.Pool) -> None:
    payer = Account.create()
    pid, tx = await record_payment(pool, from_address=payer.address.lower())
    shouted = "0x" + tx[2:].upper()
    async with client(app_for(pool)) as http:
        found = await http.post("/x402/verify-payment", json={"chain": "base", "tx_hash": shouted})
        assert found.status_code == 200
        answer = found.json()
        assert answer["status"] == "credited" and answer["tx_hash"] == tx
        assert answer["payments"][0]["payment_id"] == pid
        signed = evm_sign(payer, "base", tx)
        assert answer["claim_message"].endswith(tx)
        first = await http.post(
            CLAIM, json={"chain": "base", "tx_hash": shouted, "signature": signed}
        )
        assert first.status_code == 201
        again = await http.post(CLAIM, json={"chain": "base", "tx_hash": tx, "signature": signed})
        assert again.status_code == 409
        assert again.json()["error"] == "already_claimed"
        assert again.json()["token_id"] == first.json()["token_id"]
        after = await http.post("/x402/verify-payment", json={"chain": "base", "tx_hash": tx})
        assert after.json()["status"] == "claimed"
    assert await pool.fetchval("SELECT count(*) FROM access_tokens") == 1


async def test_unconfirmed_payment_cannot_be_claimed_yet(pool: db.Pool) -> None:
    payer = Account.create()
    _, tx = await record_payment(
        pool, from_address=payer.address.lower(), credit=False, block_number=100
    )
    await pool.execute("INSERT INTO cursors (chain, num, head) VALUES ('base', 101, 102)")
    async with client(app_for(pool)) as http:
        seen = (
            await http.post("/x402/verify-payment", json={"chain": "base", "tx_hash": tx})
        ).json()
        assert seen["status"] == "pending"
        assert seen["payments"][0]["confirmations"] == {"have": 3, "need": 6}
        early = await http.post(
            CLAIM,
            json={"chain": "base", "tx_hash": tx, "signature": evm_sign(payer, "base", tx)},
        )
        assert early.status_code == 409 and early.json()["error"] == "not_confirmed"
        missing = await http.post(
            "/x402/verify-payment", json={"chain": "base", "tx_hash": "0x" + "00" * 32}
        )
        assert missing.json()["status"] == "not_found"


async def test_solana_payer_claims_with_ed25519(pool: db.Pool) -> None:
    payer, thief = Keypair(), Keypair()
    signature = str(Keypair().sign_message(b"any tx"))  # a well-formed Solana tx signature
    await record_payment(
        pool,
        chain="solana",
        tx_hash=signature,
        from_address=str(payer.pubkey()),
        to_address=SOLANA_OWNER,
        token=SOLANA_MINT,
        amount=500_000,
        block_number=300,
    )
    async with client(app_for(pool)) as http:
        forged = await http.post(
            CLAIM,
            json={
                "chain": "solana",
                "tx_hash": signature,
                "signature": solana_sign(thief, signature),
            },
        )
        assert forged.status_code == 403
        ok = await http.post(
            CLAIM,
            json={
                "chain": "solana",
                "tx_hash": signature,
                "signature": solana_sign(payer, signature),
            },
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["requests"] == 5 and ok.json()["chain"] == "solana"


async def test_contract_wallet_claims_through_eip1271_on_anvil(
    pool: db.Pool, anvil: Anvil, usdc: Token
) -> None:
    owner = Account.create()  # the key behind the smart wallet; it holds no funds
    art = artifact("ContractWallet")
    deploy = art["bytecode"] + encode(["address"], [owner.address]).hex()
    rec = await anvil.receipt(await anvil.send(anvil.accounts[0], None, deploy, gas=1_000_000))
    wallet = rec["contractAddress"].lower()
    await usdc.mint(wallet, 5_000_000)
    pay = calldata("transfer(address,uint256)", BASE_RECEIVER, 3_000_000)
    call = calldata("execute(address,bytes)", usdc.address, bytes.fromhex(pay[2:]))
    receipt = await anvil.receipt(await anvil.send(anvil.accounts[0], wallet, call, gas=200_000))
    assert receipt["status"] == "0x1"
    await follow_receipt(pool, receipt, "base", usdc.address, BASE_RECEIVER, credit=True)
    tx = receipt["transactionHash"].lower()
    app = app_for(
        pool,
        x402_base_rpc_url=anvil.url,
        x402_base_chain_id=anvil.chain_id,
        x402_base_usdc_address=usdc.address,
    )
    async with client(app) as http:
        stranger = await http.post(
            CLAIM,
            json={
                "chain": "base",
                "tx_hash": tx,
                "signature": evm_sign(Account.create(), "base", tx),
            },
        )
        assert stranger.status_code == 403
        ok = await http.post(
            CLAIM, json={"chain": "base", "tx_hash": tx, "signature": evm_sign(owner, "base", tx)}
        )
        assert ok.status_code == 201, ok.text
        assert ok.json()["requests"] == 30
    assert await pool.fetchval("SELECT payer FROM access_tokens") == wallet


async def test_racing_claims_make_one_token(pool: db.Pool) -> None:
    payer = Account.create()
    _, tx = await record_payment(pool, from_address=payer.address.lower())
    body = {"chain": "base", "tx_hash": tx, "signature": evm_sign(payer, "base", tx)}
    async with client(app_for(pool)) as http:
        answers = await asyncio.gather(*(http.post(CLAIM, json=body) for _ in range(8)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] + [409] * 7
    winner = next(a for a in answers if a.status_code == 201).json()["token_id"]
    assert all(a.json()["token_id"] == winner for a in answers if a.status_code == 409)
    assert await pool.fetchval("SELECT count(*) FROM access_tokens") == 1
