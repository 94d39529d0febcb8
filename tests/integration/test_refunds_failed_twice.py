"""A refund marked failed while its transaction did land (a node that has no receipt yet
for a transaction another node already counts) must not leave its amount refundable
again: a second refund of the same payment would send the money twice (anvil, the real
sender behind the fault proxy, the API)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from api.app import create_app
from devkit import refundkit
from devkit.anvil import Anvil, Token
from devkit.api_support import client
from devkit.faultproxy import FaultProxy
from devkit.refundkit import HEADERS
from watcher import db
from watcher.refunds import worker


async def no_receipts(call: dict[str, Any], _: FaultProxy) -> Response | None:
    if call.get("method") == "eth_getTransactionReceipt":  # a node behind on receipts
        body = {"jsonrpc": "2.0", "id": call.get("id"), "result": None}
        return Response(json.dumps(body), media_type="application/json")
    return None


async def test_a_refund_failed_without_a_receipt_keeps_its_amount_refunded(
    anvil: Anvil, usdc: Token, pool: db.Pool
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 2_000_000)
    before = await usdc.balance_of(w.payer)
    proxy = await FaultProxy(anvil.url, anvil.ws_url).start()
    proxy.intercept = no_receipts
    stale = w.settings(rpc_url=proxy.url)
    try:
        async with client(create_app(w.settings(), pool)) as http:
            first = await http.post(
                "/x402/admin/refunds",
                headers=HEADERS,
                json={"payment_id": pid, "reason": "asked", "refund_key": "rf-a"},
            )
            rid = int(first.json()["id"])
            assert await worker.run_pass(stale, pool) == {"base": 1}  # signed, sent, mined
            await anvil.mine(1)
            assert await worker.run_pass(stale, pool) == {"base": 1}  # no receipt: failed
            assert await refundkit.status(pool, rid) == "failed"
            assert await usdc.balance_of(w.payer) == before + 2_000_000  # it did move
            again = await http.post(
                "/x402/admin/refunds",
                headers=HEADERS,
                json={"payment_id": pid, "reason": "the first failed", "refund_key": "rf-b"},
            )
    finally:
        await proxy.stop()
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "nothing_refundable"
    await worker.run_pass(w.settings(), pool)
    await refundkit.follow(w, pool)
    assert await usdc.balance_of(w.payer) == before + 2_000_000  # once
    # the follower saw the transfer land: the failed refund is linked and confirmed
    assert await refundkit.status(pool, rid) == "confirmed"
