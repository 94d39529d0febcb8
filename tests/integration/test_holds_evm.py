"""Holds end to end on anvil (issue 16): the real follower, the real API over HTTP.

A tiny deny-list of our own (the real one is the screening part's) stands for any
rule: what is listed is held at credit, shown held, not claimable, and claimable
once an operator releases it. The screen is installed after the app is built (the
app installs the one its settings describe).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from eth_abi.abi import encode

from api import claims
from devkit.anvil import Anvil, Token, artifact, calldata, deploy_token, start_anvil
from devkit.api_support import ADMIN_KEY, BASE_RECEIVER, app_for, client
from devkit.evmkit import drain, evm_chain, follower, payments
from tests.integration import test_explain
from watcher import db, holds
from watcher.screening import core

CLAIM = "/x402/generate-token"
VERIFY = "/x402/verify-payment"
ADMIN = {"x-admin-key": ADMIN_KEY, "x-admin-operator": "alice@example.com"}


class Listed:
    """A tiny deny-list: the addresses given, under one listing's name."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = {a.lower() for a in addresses}

    def lookup(self, address: str) -> str | None:
        return "the test list" if address.lower() in self.addresses else None


@pytest.fixture(autouse=True)
def default_screen() -> Iterator[None]:
    yield
    core.install(core.Screen())


async def _sign(anvil: Anvil, who: str, tx: str) -> str:
    text = claims.claim_message("base", tx)
    signed: str = await anvil.rpc("personal_sign", "0x" + text.encode().hex(), who)
    return signed


async def _claim(http, anvil: Anvil, who: str, tx: str):  # type: ignore[no-untyped-def]
    body = {"chain": "base", "tx_hash": tx, "signature": await _sign(anvil, who, tx)}
    return await http.post(CLAIM, json=body)


async def test_a_listed_payer_is_held_shown_held_and_claimable_once_released(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer = anvil.accounts[1]
    app = app_for(pool)
    core.install(core.Screen(denylist=Listed(payer)))
    tx = (await usdc.transfer(payer, BASE_RECEIVER, 2_000_000))["transactionHash"]
    await anvil.mine(2)
    async with follower(evm_chain(anvil, usdc, [BASE_RECEIVER], confirmations=2), pool) as f:
        await drain(f)
    (row,) = await payments(pool)
    assert (row["state"], row["tx_sender"]) == ("held", payer)
    assert row["reason"].startswith(f"from {payer} is on the test list; tx_sender {payer}")
    async with client(app) as http:
        seen = (await http.post(VERIFY, json={"chain": "base", "tx_hash": tx})).json()
        assert seen["status"] == "held" and seen["payments"][0]["reason"] == row["reason"]
        early = await _claim(http, anvil, payer, tx)
        assert early.status_code == 409 and early.json()["error"] == "payment_held"
        mark = await http.post(
            f"/x402/admin/payments/{row['id']}/mark",
            json={"action": "settle", "reason": "paid"},
            headers=ADMIN,
        )
        assert mark.status_code == 409  # the operator's settle never credits a held payment
        queue = (await http.get("/x402/admin/holds", headers=ADMIN)).json()["holds"]
        assert [h["id"] for h in queue] == [row["id"]]
        assert queue[0]["risk"]["rules"][0]["rule"] == "denylist"
        nobody = await http.post(
            f"/x402/admin/payments/{row['id']}/release",
            json={"reason": "known"},
            headers={"x-admin-key": ADMIN_KEY},
        )
        assert nobody.status_code == 400  # no operator named
        empty = await http.post(
            f"/x402/admin/payments/{row['id']}/release", json={"reason": ""}, headers=ADMIN
        )
        assert empty.status_code == 422
        ok = await http.post(
            f"/x402/admin/payments/{row['id']}/release",
            json={"reason": "a known customer, listed by mistake"},
            headers=ADMIN,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["payment"]["state"] == "credited"
        assert ok.json()["payment"]["reviewed_by"] == "alice@example.com"
        again = await http.post(
            f"/x402/admin/payments/{row['id']}/release", json={"reason": "again"}, headers=ADMIN
        )
        assert again.status_code == 409 and again.json()["state"] == "credited"
        missing = await http.post(
            "/x402/admin/payments/999999/reject", json={"reason": "x"}, headers=ADMIN
        )
        assert missing.status_code == 404
        claimed = await _claim(http, anvil, payer, tx)
        assert claimed.status_code == 201, claimed.text
    audit = await pool.fetchrow("SELECT * FROM admin_audit WHERE action = 'payment.release'")
    assert (audit["payment_id"], audit["operator"]) == (row["id"], "alice@example.com")


async def test_a_rejected_payment_is_never_claimable(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer = anvil.accounts[2]
    app = app_for(pool)
    core.install(core.Screen(denylist=Listed(payer)))
    tx = (await usdc.transfer(payer, BASE_RECEIVER, 2_000_000))["transactionHash"]
    await anvil.mine(2)
    async with follower(evm_chain(anvil, usdc, [BASE_RECEIVER], confirmations=2), pool) as f:
        await drain(f)
    (row,) = await payments(pool)
    async with client(app) as http:
        no = await http.post(
            f"/x402/admin/payments/{row['id']}/reject", json={"reason": "listed"}, headers=ADMIN
        )
        assert no.status_code == 200 and no.json()["payment"]["state"] == "rejected"
        refused = await _claim(http, anvil, payer, tx)
        assert refused.status_code == 409 and refused.json()["error"] == "payment_rejected"
        seen = (await http.post(VERIFY, json={"chain": "base", "tx_hash": tx})).json()
        assert seen["status"] == "rejected"
        mark = await http.post(
            f"/x402/admin/payments/{row['id']}/mark",
            json={"action": "settle", "reason": "paid"},
            headers=ADMIN,
        )
        assert mark.status_code == 409
    (row,) = await payments(pool)
    assert row["state"] == "rejected"


async def test_a_transfer_through_a_contract_is_screened_on_its_transaction_sender(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    sender = anvil.accounts[3]
    code = artifact("ContractWallet")["bytecode"] + encode(["address"], [sender]).hex()
    made = await anvil.receipt(await anvil.send(sender, None, code, gas=1_500_000))
    wallet = made["contractAddress"].lower()
    await usdc.mint(wallet, 5_000_000)
    pay = calldata("transfer(address,uint256)", BASE_RECEIVER, 3_000_000)
    call = calldata("execute(address,bytes)", usdc.address, bytes.fromhex(pay[2:]))
    await anvil.receipt(await anvil.send(sender, wallet, call, gas=200_000))
    await anvil.mine(2)
    core.install(core.Screen(denylist=Listed(sender)))  # the sender, not the wallet
    async with follower(evm_chain(anvil, usdc, [BASE_RECEIVER], confirmations=2), pool) as f:
        await drain(f)
    (row,) = await payments(pool)
    assert (row["from_address"], row["tx_sender"], row["state"]) == (wallet, sender, "held")
    assert row["reason"] == f"tx_sender {sender} is on the test list"


async def test_without_a_rule_needing_addresses_no_sender_is_asked(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    await usdc.transfer(anvil.accounts[1], BASE_RECEIVER, 2_000_000)
    await anvil.mine(2)
    async with follower(evm_chain(anvil, usdc, [BASE_RECEIVER], confirmations=2), pool) as f:
        await drain(f)
    (row,) = await payments(pool)
    assert (row["state"], row["tx_sender"]) == ("credited", None)


async def test_a_held_payment_reorged_out_is_orphaned(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    payer = anvil.accounts[1]
    core.install(core.Screen(denylist=Listed(payer)))
    await usdc.transfer(payer, BASE_RECEIVER, 2_000_000)
    await anvil.mine(2)
    chain = evm_chain(anvil, usdc, [BASE_RECEIVER], confirmations=2)
    async with follower(chain, pool) as f:
        await drain(f)
        (row,) = await payments(pool)
        assert row["state"] == "held"
        await anvil.rpc("anvil_reorg", 3, [])  # deeper than the confirmations: its block goes
        await anvil.mine(3)
        await drain(f)
    (row,) = await payments(pool)
    assert row["state"] == "orphaned" and "reorged out" in row["reason"]


async def test_old_blocks_of_a_backfill_are_held_and_an_old_credit_cannot_be_claimed(
    pool: db.Pool,
) -> None:
    month_ago = int(time.time()) - 30 * 86400
    node = await start_anvil("--timestamp", str(month_ago))
    try:
        usdc = await deploy_token(node)
        payer = node.accounts[1]
        await usdc.mint(payer, 10**12)
        old = (await usdc.transfer(payer, BASE_RECEIVER, 2_000_000))["transactionHash"]
        await node.rpc("evm_setNextBlockTimestamp", hex(int(time.time())))
        await node.mine(1)
        new = (await usdc.transfer(payer, BASE_RECEIVER, 3_000_000))["transactionHash"]
        await node.mine(2)
        app = app_for(pool)
        core.install(core.Screen())  # the defaults: the 7-day age rule
        async with follower(evm_chain(node, usdc, [BASE_RECEIVER], confirmations=2), pool) as f:
            await drain(f)
        rows = {r["tx_hash"]: r for r in await payments(pool)}
        assert rows[old]["state"] == "held"
        assert rows[old]["reason"].startswith("first seen 30 days after its block")
        assert rows[new]["state"] == "credited"
        # Released by an operator: credited, but its block is too old to claim (refund it).
        async with client(app) as http:
            ok = await http.post(
                f"/x402/admin/payments/{rows[old]['id']}/release",
                json={"reason": "late but fine"},
                headers=ADMIN,
            )
            assert ok.status_code == 200
            seen = (await http.post(VERIFY, json={"chain": "base", "tx_hash": old})).json()
            assert "can no longer be claimed" in seen["payments"][0]["warning"]
            late = await _claim(http, node, payer, old)
            assert late.status_code == 409 and late.json()["error"] == "payment_too_old"
            assert "refund" in late.json()["fix"]
            fresh = await _claim(http, node, payer, new)
            assert fresh.status_code == 201
    finally:
        await node.close()


async def test_explain_shows_the_hold_its_rules_and_the_review(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str
) -> None:
    payer = anvil.accounts[1]
    core.install(core.Screen(denylist=Listed(payer)))
    tx = (await usdc.transfer(payer, BASE_RECEIVER, 2_000_000))["transactionHash"]
    await anvil.mine(2)
    async with follower(evm_chain(anvil, usdc, [BASE_RECEIVER], confirmations=2), pool) as f:
        await drain(f)
    env = {
        "X402_BASE_USDC_ADDRESS": usdc.address,
        "X402_BASE_PAYMENT_ADDRESS": BASE_RECEIVER,
        "X402_BASE_RPC_URL": anvil.url,
        "X402_BASE_CHAIN_ID": str(anvil.chain_id),
        "DATABASE_URL": database_url,
    }
    code, out, err = test_explain.explain("--chain", "base", tx, **env)
    assert code == 0, err
    assert "[ledger: held]" in out
    assert "held for review: 1 payment, not credited and not claimable" in out
    assert f"from {payer} is on the test list" in out
    assert "risk: score 100" in out and "denylist (weight 100):" in out
    (row,) = await payments(pool)
    async with pool.acquire() as conn, conn.transaction():
        await holds.review(conn, "release", row["id"], "alice", "known customer")
    report = test_explain.explain_json("--chain", "base", tx, **env)
    (line,) = report["transactions"][0]["transfers"]
    assert line["state"] == "credited" and line["tx_sender"] == payer
    assert line["review"]["by"] == "alice" and line["review"]["note"] == "known customer"
    assert [r["rule"] for r in line["risk"]["rules"]] == ["denylist", "denylist"]
    code, out, _ = test_explain.explain("--chain", "base", tx, **env)
    assert "review: by alice at " in out and ": known customer" in out
