"""Refunds exported for an outside signer (no key configured): the unsigned EIP-1559
transaction decodes to the USDC transfer, the Safe Transaction Builder file has its
shape, and the transfer the wallet signs and sends is linked and confirmed."""

from __future__ import annotations

import rlp
from eth_account import Account
from eth_utils.crypto import keccak

from api.app import create_app
from devkit import refundkit
from devkit.anvil import Anvil, Token
from devkit.api_support import client
from devkit.refundkit import HEADERS
from watcher import db
from watcher.refunds import evm, worker


def from_hex(tx: dict[str, object]) -> dict[str, object]:
    ints = ("chainId", "nonce", "gas", "maxFeePerGas", "maxPriorityFeePerGas", "value", "type")
    return {k: int(str(v), 16) if k in ints else v for k, v in tx.items()}


async def test_an_exported_refund_decodes_and_once_signed_is_linked_and_confirmed(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_500_000)
    settings = w.settings(key=False)
    async with client(create_app(settings, pool)) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "over-paid"}
        )
        rid = int(made.json()["id"])
        assert await worker.run_pass(settings, pool) == {}  # no key: nothing sends it
        safe = await http.get(f"/x402/admin/refunds/{rid}/export?format=safe", headers=HEADERS)
        got = await http.get(f"/x402/admin/refunds/{rid}/export?format=eip1559", headers=HEADERS)
        junk = await http.get(f"/x402/admin/refunds/{rid}/export?format=solana", headers=HEADERS)
    assert junk.status_code == 422 and junk.json()["error"] == "invalid_format"
    assert safe.status_code == 200, safe.text
    batch = safe.json()["export"]
    assert set(batch) == {"version", "chainId", "createdAt", "meta", "transactions"}
    assert batch["chainId"] == str(anvil.chain_id)
    assert batch["meta"]["createdFromSafeAddress"].lower() == w.wallet_address
    (tx,) = batch["transactions"]
    assert set(tx) == {"to", "value", "data", "contractMethod", "contractInputsValues"}
    assert tx["to"].lower() == usdc.address and tx["value"] == "0"
    assert tx["contractMethod"]["name"] == "transfer"
    assert [i["type"] for i in tx["contractMethod"]["inputs"]] == ["address", "uint256"]
    assert tx["contractInputsValues"] == {
        "to": tx["contractInputsValues"]["to"],
        "value": "1500000",
    }
    assert tx["contractInputsValues"]["to"].lower() == w.payer

    assert got.status_code == 200, got.text
    doc = got.json()["export"]
    raw = bytes.fromhex(doc["unsigned"][2:])
    assert raw[0] == 2
    chain_id, _nonce, _tip, _max_fee, _gas, to, value, data, access = rlp.decode(raw[1:])
    assert int.from_bytes(chain_id, "big") == anvil.chain_id
    assert "0x" + to.hex() == usdc.address and value == b"" and access == []
    assert "0x" + data.hex() == evm.transfer_data(w.payer, 1_500_000)
    assert doc["signing_hash"] == "0x" + keccak(raw).hex()
    assert await refundkit.status(pool, rid) == "exported"

    # the wallet (here: the test, holding its key) signs the exported fields and sends them
    fields = from_hex(doc["transaction"])
    signed = Account.sign_transaction(fields, w.wallet.key)
    assert "0x" + bytes(signed.hash).hex() != doc["signing_hash"]  # signed differs from unsigned
    before = await usdc.balance_of(w.payer)
    await anvil.rpc("eth_sendRawTransaction", "0x" + signed.raw_transaction.hex())
    await refundkit.follow(w, pool)
    row = await pool.fetchrow("SELECT * FROM refunds WHERE id = $1", rid)
    assert row["status"] == "confirmed" and row["out_tx_hash"] == "0x" + bytes(signed.hash).hex()
    assert await usdc.balance_of(w.payer) == before + 1_500_000


async def test_no_export_while_a_key_sends_refunds(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_000_000)
    async with client(create_app(w.settings(), pool)) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "r"}
        )
        got = await http.get(f"/x402/admin/refunds/{made.json()['id']}/export", headers=HEADERS)
    assert got.status_code == 409 and got.json()["error"] == "no_export_wallet"


async def test_an_export_keeps_its_nonce_and_the_next_refund_takes_the_next_one(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    # Exported again (say after the first copy was signed and mined, before the follower
    # linked it), a refund is the same transaction: two signed copies cannot both land.
    w = await refundkit.world(anvil, usdc)
    first = await refundkit.pay(w, pool, 1_500_000)
    second = await refundkit.pay(w, pool, 1_200_000)
    settings = w.settings(key=False)
    nonces = []
    async with client(create_app(settings, pool)) as http:
        ids = []
        for pid in (first, second):
            made = await http.post(
                "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "x"}
            )
            assert made.status_code == 200, made.text
            ids.append(int(made.json()["id"]))
        for rid in (ids[0], ids[0], ids[1]):
            got = await http.get(
                f"/x402/admin/refunds/{rid}/export?format=eip1559", headers=HEADERS
            )
            assert got.status_code == 200, got.text
            nonces.append(int(got.json()["export"]["transaction"]["nonce"], 16))
    pending = int(await anvil.rpc("eth_getTransactionCount", w.wallet_address, "pending"), 16)
    assert nonces == [pending, pending, pending + 1]
