"""A contract wallet's EIP-1271 answer counts only when it is exactly the magic word.

Real contracts on anvil pay real (test) USDC; the claim goes over real HTTP to
the app, which asks the wallet with ``eth_call``.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from api import claims
from devkit.anvil import Anvil, Token, artifact, calldata
from devkit.api_support import BASE_RECEIVER, app_for, follow_receipt, serve
from watcher import db

CLAIM = "/x402/generate-token"


async def paid_from(anvil: Anvil, usdc: Token, pool: db.Pool, contract: str) -> tuple[str, str]:
    """Deploy ``contract``, pay 3 USDC from it, credit it; returns (wallet, tx hash)."""
    deploy = artifact(contract)["bytecode"]
    rec = await anvil.receipt(await anvil.send(anvil.accounts[0], None, deploy, gas=1_000_000))
    wallet = rec["contractAddress"].lower()
    await usdc.mint(wallet, 5_000_000)
    pay = calldata("transfer(address,uint256)", BASE_RECEIVER, 3_000_000)
    call = calldata("execute(address,bytes)", usdc.address, bytes.fromhex(pay[2:]))
    receipt = await anvil.receipt(await anvil.send(anvil.accounts[0], wallet, call, gas=200_000))
    assert receipt["status"] == "0x1"
    await follow_receipt(pool, receipt, "base", usdc.address, BASE_RECEIVER, credit=True)
    return wallet, receipt["transactionHash"].lower()


@pytest.mark.parametrize(
    "contract",
    [
        "EchoWallet",  # answers its calldata: 0x1626ba7e + the hash + the signature
        "ShortAnswerWallet",  # answers the bare 4 bytes
        "LongAnswerWallet",  # answers the magic word and a second word
        "DirtyAnswerWallet",  # one word, the magic value, then a non-zero byte
        "RevertingWallet",
    ],
)
async def test_loose_contract_answers_claim_nothing(
    pool: db.Pool, anvil: Anvil, usdc: Token, contract: str
) -> None:
    wallet, tx = await paid_from(anvil, usdc, pool, contract)
    # Each wallet (but the reverter) really answers something starting with the magic value.
    probe = {
        "to": wallet,
        "data": calldata("isValidSignature(bytes32,bytes)", b"\x11" * 32, b"\x22" * 65),
    }
    if contract != "RevertingWallet":
        answer = await anvil.rpc("eth_call", probe, "latest")
        assert answer.startswith(claims.EIP1271_MAGIC) and answer != claims.EIP1271_YES
    app = app_for(
        pool,
        x402_base_rpc_url=anvil.url,
        x402_base_chain_id=anvil.chain_id,
        x402_base_usdc_address=usdc.address,
    )
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(3):  # a few random 65-byte "signatures"
            junk = "0x" + secrets.token_bytes(65).hex()
            r = await http.post(CLAIM, json={"chain": "base", "tx_hash": tx, "signature": junk})
            assert r.status_code == 403, r.text
            assert r.json()["error"] == "signature_mismatch"
    assert await pool.fetchval("SELECT count(*) FROM access_tokens") == 0
    state = await pool.fetchval("SELECT state FROM payments WHERE from_address = $1", wallet)
    assert state == "credited"  # still there for its real owner to claim
