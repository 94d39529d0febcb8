"""A transfer keeps its identity across reorgs: one transaction buys one token, however it lands.

Attacks reproduced on anvil with the real follower and the app over real HTTP:

* a credited, claimed transfer is reorged out deeper than the confirmations, and its
  signed transaction is broadcast again and lands at another log index: it must
  re-attach to the payment it was (same token), never become a second claimable one;
* while it is off the canonical chain the payment buys nothing: claims are refused and
  the token it bought is suspended (402), until the transfer is confirmed again;
* a re-mined batch transaction whose logs shift position must not hand one transfer's
  amount (or state) to another.
"""

from __future__ import annotations

from typing import Any

import httpx
from eth_account import Account
from prometheus_client import REGISTRY

from api.app import create_app
from devkit.anvil import Anvil, Token, calldata
from devkit.api_support import evm_sign, make_settings, serve
from devkit.evmkit import (
    Signer,
    canonical_transfers,
    drain,
    evm_chain,
    follower,
    mine_together,
    payments,
)
from watcher import db

CONF = 3
PAID = "/x402/example/paid"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _app(pool: db.Pool, usdc: Token, us: str) -> Any:
    return create_app(
        make_settings(x402_base_payment_address=us, x402_base_usdc_address=usdc.address), pool
    )


async def _claim(http: httpx.AsyncClient, key: Any, tx: str) -> httpx.Response:
    sig = evm_sign(key, "base", tx)
    return await http.post(
        "/x402/generate-token", json={"chain": "base", "tx_hash": tx, "signature": sig}
    )


def _send(sender: str, usdc: Token, to: str, amount: int) -> dict[str, str]:
    """An eth_sendTransaction request paying more than our signer, so mined ahead of it."""
    return {
        "from": sender,
        "to": usdc.address,
        "data": calldata("transfer(address,uint256)", to, amount),
        "gas": hex(200_000),
        "gasPrice": hex(50 * 10**9),
    }


async def _count(pool: db.Pool, sql: str, *args: Any) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval(sql, *args)
        return n


async def test_rebroadcast_after_deep_reorg_reattaches_and_never_buys_twice(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    us = anvil.accounts[7]
    payer = Signer(anvil, usdc)
    await payer.fund(100_000_000)
    other = anvil.accounts[1]
    raw = payer.sign(calldata("transfer(address,uint256)", us, 500_000))  # 5 calls
    tx = await payer.broadcast(raw)
    await anvil.mine(CONF)
    chain = evm_chain(anvil, usdc, [us], confirmations=CONF)
    flagged_before = _metric("watcher_credited_reorged_total", chain="base")
    deep_before = _metric("watcher_deep_reorgs_total", chain="base")
    app = _app(pool, usdc, us)
    async with (
        follower(chain, pool) as f,
        serve(app) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        await drain(f)
        claimed = await _claim(http, payer.account, tx)
        assert claimed.status_code == 201, claimed.text
        token = {"x-payment-token": claimed.json()["token"]}
        assert (await http.get(PAID, headers=token)).status_code == 200

        # Deeper than the confirmations: the payment's block is gone, and the transaction
        # with it (anvil does not put it back in its pool).
        await anvil.rpc("anvil_reorg", CONF + 2, [])
        assert await anvil.rpc("eth_getTransactionReceipt", tx) is None
        await anvil.mine(1)
        await drain(f)
        (row,) = await payments(pool, tx_hash=tx)
        assert row["reorged_after_credit"] is True
        refused = await http.get(PAID, headers=token)
        assert refused.status_code == 402
        assert refused.json()["error"] == "token_suspended_payment_reorged"
        again = await _claim(http, payer.account, tx)
        assert (again.status_code, again.json()["error"]) == (409, "payment_reorged")
        seen = await http.post("/x402/verify-payment", json={"chain": "base", "tx_hash": tx})
        assert seen.json()["status"] == "reorged"
        assert _metric("watcher_credited_reorged_total", chain="base") == flagged_before + 1
        assert _metric("watcher_deep_reorgs_total", chain="base") == deep_before + 1

        # Anyone broadcasts the dropped transaction again; another transfer to us is mined
        # ahead of it in the same block, so it lands at another log index.
        await mine_together(
            anvil,
            [
                ("eth_sendTransaction", _send(other, usdc, us, 300_000)),
                ("eth_sendRawTransaction", raw),
            ],
        )
        receipt = await anvil.rpc("eth_getTransactionReceipt", tx)
        assert int(receipt["logs"][0]["logIndex"], 16) == 1  # the position really moved
        await drain(f)
        (row,) = await payments(pool, tx_hash=tx)
        assert (row["log_index"], row["state"]) == (1, "claimed")
        assert row["reorged_after_credit"] is True  # seen again, not yet confirmed there
        assert (await http.get(PAID, headers=token)).status_code == 402

        await anvil.mine(CONF)
        await drain(f)
        (row,) = await payments(pool, tx_hash=tx)
        assert row["reorged_after_credit"] is False
        assert row["block_number"] == int(receipt["blockNumber"], 16)
        served = await http.get(PAID, headers=token)
        assert served.status_code == 200 and served.json()["remaining"] == 3
        twice = await _claim(http, payer.account, tx)
        assert (twice.status_code, twice.json()["error"]) == (409, "already_claimed")
    assert await _count(pool, "SELECT count(*) FROM access_tokens") == 1
    assert await _count(pool, "SELECT count(*) FROM payments WHERE tx_hash = $1", tx) == 1
    assert _metric("watcher_credited_relanded_total", chain="base") >= 1


async def test_reorged_credit_that_never_relands_stays_unclaimable(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    """Credited, never claimed, then reorged out for good: nobody can claim it."""
    us = anvil.accounts[7]
    payer = Signer(anvil, usdc)
    await payer.fund(10_000_000)
    tx = await payer.broadcast(payer.sign(calldata("transfer(address,uint256)", us, 1_000_000)))
    await anvil.mine(CONF)
    chain = evm_chain(anvil, usdc, [us], confirmations=CONF)
    app = _app(pool, usdc, us)
    async with (
        follower(chain, pool) as f,
        serve(app) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        await drain(f)
        await anvil.rpc("anvil_reorg", CONF + 1, [])
        await anvil.mine(CONF + 1)
        await drain(f)
        got = await _claim(http, payer.account, tx)
        assert (got.status_code, got.json()["error"]) == (409, "payment_reorged")
    assert await _count(pool, "SELECT count(*) FROM access_tokens") == 0


async def test_batch_transaction_remined_with_shifted_logs_keeps_each_amount(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    """The positions of a batch's transfers shift when it is mined again; every row keeps
    its own amount and state, and the ledger equals the canonical chain."""
    us = anvil.accounts[7]
    payer = Signer(anvil, usdc)
    await payer.fund(100_000_000)
    amounts = [157, 6_800_000, 106_001, 206_005]  # the first is below the $0.10 minimum
    batch = calldata("batchTransfer(address[],uint256[])", [us] * len(amounts), amounts)
    raw = payer.sign(batch, gas=400_000)
    tx = await payer.broadcast(raw)
    await anvil.mine(CONF)
    chain = evm_chain(anvil, usdc, [us], confirmations=CONF)
    async with follower(chain, pool) as f:
        await drain(f)
        assert sorted((r["amount"], r["state"]) for r in await payments(pool, tx_hash=tx)) == [
            (157, "below_minimum"),
            (106_001, "credited"),
            (206_005, "credited"),
            (6_800_000, "credited"),
        ]
        await anvil.rpc("anvil_reorg", CONF + 2, [])
        await anvil.mine(1)
        await drain(f)
        # Two transfers to us ahead of the batch in its new block: every log shifts by two.
        ahead = [
            ("eth_sendTransaction", _send(anvil.accounts[n], usdc, us, 300_000)) for n in (1, 2)
        ]
        await mine_together(anvil, [*ahead, ("eth_sendRawTransaction", raw)])
        await anvil.mine(CONF)
        await drain(f)
        head = await anvil.block_number()
    rows = await payments(pool, tx_hash=tx)
    assert sorted((r["log_index"], r["amount"], r["state"]) for r in rows) == [
        (2, 157, "below_minimum"),
        (3, 6_800_000, "credited"),
        (4, 106_001, "credited"),
        (5, 206_005, "credited"),
    ]
    assert not any(r["reorged_after_credit"] for r in rows)
    truth = await canonical_transfers(anvil, usdc, [us], head - CONF + 1)
    ledger = sorted(
        (r["tx_hash"], r["log_index"], r["block_number"], int(r["amount"]))
        for r in await payments(pool)
        if r["state"] in ("credited", "claimed", "below_minimum") and not r["reorged_after_credit"]
    )
    assert ledger == truth


async def test_identical_transfers_in_one_transaction_are_two_payments(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    """Two equal transfers to us in one batch are two payments (numbered), not one."""
    us = anvil.accounts[7]
    payer = Account.create()
    await anvil.rpc("anvil_setBalance", payer.address, hex(10**20))
    await usdc.mint(anvil.accounts[2], 10_000_000)
    receipt = await usdc.batch_transfer(anvil.accounts[2], [us, us], [500_000, 500_000])
    await anvil.mine(CONF)
    chain = evm_chain(anvil, usdc, [us], confirmations=CONF)
    async with follower(chain, pool) as f:
        await drain(f)
        await drain(f)
    rows = await payments(pool, tx_hash=receipt["transactionHash"].lower())
    assert [(r["amount"], r["state"]) for r in rows] == [(500_000, "credited")] * 2
    assert len({r["transfer_key"] for r in rows}) == 2
