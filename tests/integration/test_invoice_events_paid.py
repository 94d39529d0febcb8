"""invoice.paid: written when a payment for an open invoice is first observed (not credited)."""

from __future__ import annotations

import json
from typing import Any

from solders.keypair import Keypair

from devkit.api_support import (
    BASE_RECEIVER,
    BASE_USDC,
    SOLANA_MINT,
    SOLANA_OWNER,
    app_for,
    client,
    evm_hash,
    record_payment,
)
from watcher import db, ledger


async def _events(pool: db.Pool, type_: str, invoice_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT data FROM events WHERE type = $1 AND resource_id = $2 ORDER BY id",
        type_,
        invoice_id,
    )
    return [json.loads(r["data"]) for r in rows]


async def _status(pool: db.Pool, invoice_id: str) -> str:
    status: str = await pool.fetchval("SELECT status FROM invoices WHERE id = $1", invoice_id)
    return status


async def test_paid_once_per_pending_payment_and_again_after_an_orphan(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 2})).json()
    iid, amount = inv["invoice_id"], int(inv["amount"])

    first, tx = await record_payment(pool, amount=amount, credit=False)
    (paid,) = await _events(pool, "invoice.paid", iid)
    assert paid["payment_id"] == str(first) and paid["status"] == "paid"
    assert paid["amount"] == str(amount) and paid["object"] == "invoice"
    assert await _status(pool, iid) == "open"  # the status itself waits for the credit

    # Paid twice while the first is still pending: announced once.
    await record_payment(pool, amount=amount, credit=False)
    assert len(await _events(pool, "invoice.paid", iid)) == 1

    # The first payment's block leaves the chain; the transfer is re-included later.
    async with pool.acquire() as conn, conn.transaction():
        assert await ledger.orphan(conn, [first], "block reorged out")
    again, _ = await record_payment(pool, tx_hash=tx, amount=amount, block_number=101, credit=False)
    assert again == first
    announced = await _events(pool, "invoice.paid", iid)
    assert [e["payment_id"] for e in announced] == [str(first), str(first)]

    async with pool.acquire() as conn, conn.transaction():
        assert await ledger.credit(conn, [first])
    (credited,) = await _events(pool, "invoice.credited", iid)
    assert credited["payment_id"] == str(first) and credited["status"] == "credited"
    assert len(await _events(pool, "invoice.paid", iid)) == 2


async def test_no_paid_for_a_payment_that_pays_no_open_invoice(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "base", "requests": 2})).json()
    iid, amount = inv["invoice_id"], int(inv["amount"])
    await record_payment(pool, amount=amount + 1, credit=False)  # not the invoice's amount
    assert await _events(pool, "invoice.paid", iid) == []
    # Written straight as credited (an EVM backfill): credited, with no paid before it.
    deep = ledger.Transfer(
        chain="base",
        tx_hash=evm_hash(1),
        log_index=0,
        block_number=100,
        block_hash="0x" + "11" * 32,
        token=BASE_USDC,
        to_address=BASE_RECEIVER,
        amount=amount,
        from_address="0x" + "22" * 20,
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await ledger.record_credited(conn, [deep])
    assert await _events(pool, "invoice.paid", iid) == []
    assert len(await _events(pool, "invoice.credited", iid)) == 1
    # Paid again after the credit: the invoice is not open, nothing is announced.
    await record_payment(pool, amount=amount, credit=False)
    assert await _events(pool, "invoice.paid", iid) == []


async def test_a_solana_reference_payment_announces_its_invoice(pool: db.Pool) -> None:
    async with client(app_for(pool)) as http:
        inv = (await http.post("/x402/invoices", json={"chain": "solana", "requests": 2})).json()
    iid = inv["invoice_id"]
    common: dict[str, Any] = {
        "chain": "solana",
        "tx_hash": str(Keypair().pubkey()) + "sig",
        "to_address": SOLANA_OWNER,
        "token": SOLANA_MINT,
        "credit": False,
    }
    # Dust carrying the (public) reference does not take the invoice.
    await record_payment(pool, amount=1, reference_keys=[inv["reference"]], **common)
    assert await _events(pool, "invoice.paid", iid) == []
    common["tx_hash"] += "2"
    pid, _ = await record_payment(
        pool, amount=int(inv["amount"]), reference_keys=[inv["reference"]], **common
    )
    (paid,) = await _events(pool, "invoice.paid", iid)
    assert paid["payment_id"] == str(pid) and paid["reference"] == inv["reference"]
