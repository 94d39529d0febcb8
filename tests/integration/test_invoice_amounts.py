"""EVM invoice amounts: a late payment never pays someone else's invoice.

With a price of 3 base units a call there are only two amounts per number of calls
(3 + 1 and 3 + 2), so running out and reuse are easy to reach over real HTTP.
"""

from __future__ import annotations

from typing import Any

import httpx
from eth_account import Account

from devkit.api_support import app_for, evm_sign, record_payment, serve
from watcher import db

TINY = {"x402_price_per_call": "0.000003", "x402_min_payment_usd": "0.000001"}


async def _invoice(http: httpx.AsyncClient) -> httpx.Response:
    return await http.post("/x402/invoices", json={"chain": "base", "requests": 1})


async def _age(pool: db.Pool, invoice_id: str, *, expired_hours_ago: float) -> None:
    await pool.execute(
        "UPDATE invoices SET created_at = now() - make_interval(secs => $2 + 1800),"
        " expires_at = now() - make_interval(secs => $2) WHERE id = $1",
        invoice_id,
        expired_hours_ago * 3600,
    )


async def _claim(http: httpx.AsyncClient, key: Any, tx: str) -> httpx.Response:
    sig = evm_sign(key, "base", tx)
    return await http.post(
        "/x402/generate-token", json={"chain": "base", "tx_hash": tx, "signature": sig}
    )


async def test_expired_invoice_amount_is_held_so_a_late_payment_pays_nobody_else(
    pool: db.Pool,
) -> None:
    async with serve(app_for(pool, **TINY)) as url, httpx.AsyncClient(base_url=url) as http:
        first, second = (await _invoice(http)).json(), (await _invoice(http)).json()
        assert {int(first["amount"]), int(second["amount"])} == {4, 5}
        full = await _invoice(http)
        assert full.status_code == 503
        assert full.json()["error"] == "no_free_amount"
        assert int(full.headers["Retry-After"]) > 0

        # The first invoice expired two hours ago, past its one-hour grace. Its amount
        # stays held: a stranger's new invoice cannot get it.
        await _age(pool, first["invoice_id"], expired_hours_ago=2)
        stranger = await _invoice(http)
        assert (stranger.status_code, stranger.json()["error"]) == (503, "no_free_amount")

        # The first payer pays late. Nobody's invoice takes it; they claim by signature.
        payer = Account.create()
        _, tx = await record_payment(
            pool, from_address=payer.address.lower(), amount=int(first["amount"])
        )
        status = (await http.get(f"/x402/invoices/{first['invoice_id']}")).json()
        assert status["status"] == "expired"
        claimed = await _claim(http, payer, tx)
        assert claimed.status_code == 201 and claimed.json()["requests"] == 1

        # A day after the invoice expired the amount is free again.
        await _age(pool, first["invoice_id"], expired_hours_ago=25)
        await pool.execute(
            "UPDATE invoice_amounts SET reserved_until = now() - interval '1 second'"
            " WHERE invoice_id = $1",
            first["invoice_id"],
        )
        later = await _invoice(http)
        assert later.status_code == 201, later.text
        assert later.json()["amount"] == first["amount"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM access_tokens") == 1


async def test_a_payment_two_invoices_could_mean_matches_neither(pool: db.Pool) -> None:
    """Two invoices with one amount whose windows overlap (rows written before amounts
    were held): the payment is linked to neither and stays claimable by its sender."""
    async with serve(app_for(pool, **TINY)) as url, httpx.AsyncClient(base_url=url) as http:
        current = (await _invoice(http)).json()
        await pool.execute(
            "INSERT INTO invoices (chain, pay_to, token, amount, requests, claim_secret_hash,"
            " status, created_at, expires_at)"
            " SELECT chain, pay_to, token, amount, requests, claim_secret_hash, 'expired',"
            " now() - interval '40 minutes', now() - interval '10 minutes'"
            " FROM invoices WHERE id = $1",
            current["invoice_id"],
        )
        payer = Account.create()
        _, tx = await record_payment(
            pool, from_address=payer.address.lower(), amount=int(current["amount"])
        )
        status = (await http.get(f"/x402/invoices/{current['invoice_id']}")).json()
        assert status["status"] == "open" and "payment" not in status
        secret = {"invoice_id": current["invoice_id"], "claim_secret": current["claim_secret"]}
        refused = await http.post("/x402/generate-token", json=secret)
        assert (refused.status_code, refused.json()["error"]) == (409, "invoice_not_credited")
        assert (await _claim(http, payer, tx)).status_code == 201
    async with pool.acquire() as conn:
        linked = await conn.fetchval("SELECT count(*) FROM payments WHERE invoice_id IS NOT NULL")
        assert linked == 0
