"""Standard x402 (`exact`, EIP-3009) end to end: the x402 package's own client pays our paid
route on anvil, our relayer settles, the EVM follower credits the settlement once."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from eth_account import Account
from starlette.requests import Request
from starlette.responses import Response
from x402.http.clients.httpx import x402AsyncTransport

from api.app import create_app
from devkit.anvil import Anvil, start_anvil
from devkit.api_support import serve
from devkit.evmkit import drain, follower, payments
from devkit.faultproxy import FaultProxy
from devkit.x402kit import (
    BASE_CHAIN_ID,
    PRICE,
    ROUTE,
    World,
    decode_header,
    facilitator_app,
    make_world,
    paying_client,
    v1_header,
    v2_header,
)
from watcher import db


@pytest.fixture
async def base_anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture
async def world(base_anvil: Anvil) -> World:
    return await make_world(base_anvil)


async def authorizations(pool: db.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM x402_authorizations ORDER BY id")]


async def balances(world: World) -> tuple[int, int]:
    return (
        await world.token.balance_of(world.payer.address.lower()),
        await world.token.balance_of(world.receiver),
    )


async def credit_once(world: World, pool: db.Pool) -> list[dict[str, Any]]:
    """Run the follower past the confirmations twice; return the payment rows."""
    chain = world.chain(confirmations=2)
    async with follower(chain, pool) as f:
        await world.node.mine(3)
        await drain(f)
        await drain(f)
    return await payments(pool)


async def test_v2_client_pays_402_then_200_and_the_follower_credits_it_once(
    world: World, pool: db.Pool
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as plain:
            first = await plain.get(ROUTE)
        assert first.status_code == 402
        required = decode_header(first.headers["PAYMENT-REQUIRED"])
        (offer,) = required["accepts"]
        assert required["x402Version"] == 2 and required["resource"]["url"].endswith(ROUTE)
        assert offer["scheme"] == "exact" and offer["network"] == f"eip155:{BASE_CHAIN_ID}"
        assert (offer["amount"], offer["payTo"].lower()) == (str(PRICE), world.receiver)
        assert offer["asset"].lower() == world.token.address
        assert offer["extra"] == {"name": "USD Coin", "version": "2"}
        assert offer["maxTimeoutSeconds"] > 0
        assert first.json()["invoice"]  # the older ways to pay are still listed

        transport = x402AsyncTransport(paying_client(world.payer, world.token.address))
        async with httpx.AsyncClient(base_url=url, transport=transport) as paying:
            paid = await paying.get(ROUTE)
    assert paid.status_code == 200, paid.text
    assert paid.headers["Cache-Control"] == "private"  # a settled answer is the payer's
    assert paid.json()["result"] == "paid content"
    settled = decode_header(paid.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["network"] == f"eip155:{BASE_CHAIN_ID}"
    assert settled["payer"].lower() == world.payer.address.lower()
    assert await balances(world) == (9 * PRICE, PRICE)

    rows = await credit_once(world, pool)
    (payment,) = rows
    assert (payment["tx_hash"], payment["amount"]) == (settled["transaction"], PRICE)
    assert payment["state"] == "claimed"  # served at settlement: never claimable again
    (auth,) = await authorizations(pool)
    assert (auth["status"], auth["payment_id"], auth["x402_version"]) == (
        "settled",
        payment["id"],
        2,
    )
    assert auth["tx_hash"] == settled["transaction"]


async def test_v1_client_pays_with_x_payment_and_gets_x_payment_response(
    world: World, pool: db.Pool
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        body = (await http.get(ROUTE)).json()
        assert body["x402Version"] == 1
        base = next(a for a in body["accepts"] if a["network"] == "base")
        assert base["maxAmountRequired"] == str(PRICE) and base["mimeType"]
        assert base["resource"].endswith(ROUTE) and base["description"]
        assert base["extra"]["name"] == "USD Coin" and base["extra"]["version"] == "2"
        header = await v1_header(http, world)
        paid = await http.get(ROUTE, headers=header)
    assert paid.status_code == 200, paid.text
    settled = decode_header(paid.headers["X-PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["network"] == "base"
    (payment,) = await credit_once(world, pool)
    assert (payment["tx_hash"], payment["state"]) == (settled["transaction"], "claimed")
    (auth,) = await authorizations(pool)
    assert (auth["status"], auth["payment_id"], auth["x402_version"]) == (
        "settled",
        payment["id"],
        1,
    )


@pytest.mark.parametrize(
    ("sign_over", "reason"),
    [
        ({"amount": str(PRICE // 2)}, "invalid_exact_evm_payload_authorization_value_mismatch"),
        (
            {"pay_to": "0x000000000000000000000000000000000000dEaD"},
            "invalid_exact_evm_payload_recipient_mismatch",
        ),
        ({"max_timeout_seconds": 1}, "invalid_exact_evm_payload_authorization_valid_before"),
        ({"extra": {"name": "USD Coin", "version": "1"}}, "invalid_exact_evm_payload_signature"),
    ],
    ids=["wrong-amount", "wrong-recipient", "expired-window", "wrong-domain"],
)
async def test_bad_authorizations_are_refused_with_the_spec_reason_and_nothing_moves(
    world: World, pool: db.Pool, sign_over: dict[str, Any], reason: str
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await v2_header(http, world, **sign_over)
        resp = await http.get(ROUTE, headers=header)
    assert resp.status_code == 402
    body = resp.json()
    assert body["error"] == reason
    # The transport spec: the v2 ``error`` is for people; our code rides in extensions.
    required = decode_header(resp.headers["PAYMENT-REQUIRED"])
    assert required["error"] == body["message"] and required["error"] != reason
    assert required["extensions"]["watcher"]["code"] == reason
    # A verification refusal answers the spec's PAYMENT-RESPONSE with success false.
    failed = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert failed["success"] is False and failed["errorReason"] == reason
    assert resp.headers["Cache-Control"] == "no-store"
    assert "paid content" not in resp.text
    assert await balances(world) == (10 * PRICE, 0)
    assert await authorizations(pool) == []


async def test_a_tampered_signature_is_refused(world: World, pool: db.Pool) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        ((name, value),) = (await v2_header(http, world)).items()
        payload = decode_header(value)
        sig = bytearray.fromhex(payload["payload"]["signature"][2:])
        sig[5] ^= 0xFF
        payload["payload"]["signature"] = "0x" + sig.hex()
        forged = {name: _encode(payload)}
        resp = await http.get(ROUTE, headers=forged)
    assert resp.status_code == 402
    assert resp.json()["error"] == "invalid_exact_evm_payload_signature"
    assert await balances(world) == (10 * PRICE, 0)
    assert await authorizations(pool) == []


async def test_a_replayed_header_is_refused_and_settled_once(world: World, pool: db.Pool) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await v2_header(http, world)
        first = await http.get(ROUTE, headers=header)
        again = await http.get(ROUTE, headers=header)
    assert first.status_code == 200
    assert again.status_code == 402
    assert again.json()["error"] == "invalid_exact_evm_nonce_already_used"
    assert await balances(world) == (9 * PRICE, PRICE)
    assert [a["status"] for a in await authorizations(pool)] == ["settled"]


async def test_two_concurrent_requests_with_one_authorization_serve_once(
    world: World, pool: db.Pool
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await v2_header(http, world)
        answers = await asyncio.gather(*(http.get(ROUTE, headers=header) for _ in range(2)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 402]
    refused = next(r for r in answers if r.status_code == 402)
    assert refused.json()["error"] in {
        "invalid_exact_evm_nonce_already_used",
        "invalid_exact_evm_transaction_simulation_failed",  # the twin's simulation saw it used
    }
    assert await balances(world) == (9 * PRICE, PRICE)
    assert [a["status"] for a in await authorizations(pool)] == ["settled"]
    (payment,) = await credit_once(world, pool)
    assert payment["state"] == "claimed"


async def test_unfunded_relayer_is_a_clear_503_and_nothing_is_charged(
    base_anvil: Anvil, pool: db.Pool
) -> None:
    world = await make_world(base_anvil, fund_relayer=False)
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await v2_header(http, world)
        resp = await http.get(ROUTE, headers=header)
    assert resp.status_code == 503
    body = resp.json()
    assert body["error"] == "relayer_unfunded"
    assert world.relayer.address in body["message"] and "gas" in body["message"]
    assert "nothing was charged" in body["fix"]
    assert await balances(world) == (10 * PRICE, 0)
    assert await authorizations(pool) == []  # the nonce is not burnt: the payer may retry


async def test_a_payer_without_the_money_is_refused(base_anvil: Anvil, pool: db.Pool) -> None:
    world = await make_world(base_anvil)
    app = create_app(world.settings, pool)
    broke = Account.create()  # holds no USDC
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await v2_header(http, world, broke)
        resp = await http.get(ROUTE, headers=header)
    assert resp.status_code == 402
    assert resp.json()["error"] == "invalid_exact_evm_insufficient_balance"
    assert await authorizations(pool) == []


def _encode(payload: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


async def test_a_settlement_reorged_out_is_recorded_and_never_counted_as_paid(
    world: World, pool: db.Pool
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        header = await v2_header(http, world)
        paid = await http.get(ROUTE, headers=header)
    assert paid.status_code == 200
    tx_hash = decode_header(paid.headers["PAYMENT-RESPONSE"])["transaction"]
    await world.node.mine(1)
    async with follower(world.chain(confirmations=5), pool) as f:
        await drain(f)
        (row,) = await payments(pool)
        assert row["state"] == "observed"
        await world.node.rpc("anvil_reorg", 2, [])  # the settlement's block is replaced
        assert await world.node.rpc("eth_getTransactionReceipt", tx_hash) is None
        await world.node.mine(6)
        await drain(f)
        await drain(f)
    (row,) = await payments(pool)
    assert row["state"] == "orphaned" and row["credited_at"] is None
    (auth,) = await authorizations(pool)
    assert auth["status"] == "reorged" and auth["payment_id"] is None
    assert "left the canonical chain" in auth["error"]
    assert await balances(world) == (10 * PRICE, 0)


async def test_settling_through_a_configured_facilitator(base_anvil: Anvil, pool: db.Pool) -> None:
    world = await make_world(base_anvil)
    facilitator = facilitator_app(base_anvil, world.relayer.key.hex())
    async with serve(facilitator) as facilitator_url:
        settings = world.settings.model_copy(
            update={"x402_relayer_private_key": None, "x402_facilitator_url": facilitator_url}
        )
        app = create_app(settings, pool)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            header = await v2_header(http, world)
            paid = await http.get(ROUTE, headers=header)
            again = await http.get(ROUTE, headers=header)
    assert paid.status_code == 200, paid.text
    assert facilitator.state.calls == ["verify", "settle"]  # the replay never reached it
    assert again.json()["error"] == "invalid_exact_evm_nonce_already_used"
    settled = decode_header(paid.headers["PAYMENT-RESPONSE"])
    assert await balances(world) == (9 * PRICE, PRICE)
    (payment,) = await credit_once(world, pool)
    (auth,) = await authorizations(pool)
    assert (auth["settled_by"], auth["status"]) == ("facilitator", "settled")
    assert (auth["tx_hash"], auth["payment_id"]) == (settled["transaction"], payment["id"])
    assert payment["state"] == "claimed"


async def test_garbage_payment_headers_are_a_400_or_402_saying_why(
    world: World, pool: db.Pool
) -> None:
    """A header that is not an exact x402 payload is the transport spec's 400 (malformed),
    with the offers and PAYMENT-RESPONSE (success false); one that is well formed but
    cannot pay stays a 402 (the tests above)."""
    app = create_app(world.settings, pool)
    v1_in_v2 = _encode({"x402Version": 1, "scheme": "exact", "network": "base", "payload": {}})
    auth = {
        "from": world.payer.address,
        "to": world.receiver,
        "value": str(PRICE),
        "validAfter": "0",
        "validBefore": str(2**300),
        "nonce": "0x" + "11" * 32,
    }
    v1 = {"x402Version": 1, "scheme": "exact", "network": "base"}
    wrong_types = {**v1, "payload": {"authorization": {**auth, "nonce": 5}, "signature": 7}}
    too_big = {**v1, "payload": {"authorization": auth, "signature": "0x" + "22" * 65}}
    cases = [
        ({"PAYMENT-SIGNATURE": "not base64 at all!"}, "invalid_payload", 400),
        ({"X-PAYMENT": _encode({"x402Version": 1})}, "invalid_payload", 400),
        ({"PAYMENT-SIGNATURE": v1_in_v2}, "invalid_payload", 400),
        ({"PAYMENT-SIGNATURE": "A" * 10_000}, "invalid_payload", 400),
        ({"X-PAYMENT": _encode(wrong_types)}, "invalid_payload", 400),
        ({"X-PAYMENT": _encode(too_big)}, "invalid_payload", 400),
    ]
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        for headers, reason, status in cases:
            resp = await http.get(ROUTE, headers=headers)
            assert resp.status_code == status, headers
            assert resp.json()["error"] == reason
            assert resp.json()["fix"]
            ((name, _),) = headers.items()
            answer = "PAYMENT-RESPONSE" if name == "PAYMENT-SIGNATURE" else "X-PAYMENT-RESPONSE"
            assert decode_header(resp.headers[answer])["success"] is False
    assert await authorizations(pool) == []


async def test_without_a_relayer_or_facilitator_no_v2_offer_is_made(
    world: World, pool: db.Pool
) -> None:
    settings = world.settings.model_copy(update={"x402_relayer_private_key": None})
    app = create_app(settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        resp = await http.get(ROUTE)
        header = await v1_header(http, world)
        paid = await http.get(ROUTE, headers=header)
    assert resp.status_code == 402 and "PAYMENT-REQUIRED" not in resp.headers
    assert resp.json()["x402Version"] == 1  # the manual ways to pay are still there
    assert paid.status_code == 402 and paid.json()["error"] == "invalid_network"
    assert await balances(world) == (10 * PRICE, 0)


class FrontRunningProxy(FaultProxy):
    """Runs ``before_send`` once, just before our relayer's transaction reaches anvil."""

    before_send: Callable[[], Awaitable[None]] | None = None

    async def _http(self, request: Request) -> Response:
        call = json.loads(await request.body() or b"{}")
        if isinstance(call, dict) and call.get("method") == "eth_sendRawTransaction":
            hook, self.before_send = self.before_send, None
            if hook is not None:
                await hook()
        return await super()._http(request)


async def test_a_settlement_that_reverts_is_failed_and_not_served(
    base_anvil: Anvil, pool: db.Pool
) -> None:
    proxy = await FrontRunningProxy(base_anvil.url, base_anvil.ws_url).start()
    try:
        world = await make_world(base_anvil, x402_base_rpc_url=proxy.url)
        payer = world.payer.address.lower()

        async def payer_empties_the_wallet() -> None:  # after our simulation, before our send
            await base_anvil.rpc("anvil_impersonateAccount", payer)
            await base_anvil.rpc("anvil_setBalance", payer, hex(10**17))
            await world.token.transfer(payer, "0x" + "77" * 20, 10 * PRICE)

        proxy.before_send = payer_empties_the_wallet
        app = create_app(world.settings, pool)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            header = await v2_header(http, world)
            resp = await http.get(ROUTE, headers=header)
    finally:
        await proxy.stop()
    assert resp.status_code == 402, resp.text
    assert resp.json()["error"] == "transaction_failed"
    assert "paid content" not in resp.text
    failed = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert failed["success"] is False and failed["errorReason"] == "transaction_failed"
    assert failed["transaction"].startswith("0x")
    (auth,) = await authorizations(pool)
    assert auth["status"] == "failed" and "reverted" in auth["error"]
    assert await world.token.balance_of(world.receiver) == 0


async def test_a_settlement_reorged_out_after_credit_is_flagged_reorged(
    world: World, pool: db.Pool
) -> None:
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        paid = await http.get(ROUTE, headers=await v2_header(http, world))
    assert paid.status_code == 200
    await world.node.mine(2)
    async with follower(world.chain(confirmations=2), pool) as f:
        await drain(f)
        (row,) = await payments(pool)
        assert row["state"] == "claimed"
        await world.node.rpc("anvil_reorg", 4, [])  # deeper than the confirmations
        await world.node.mine(1)
        await drain(f)
    (row,) = await payments(pool)
    assert row["reorged_after_credit"] is True
    (auth,) = await authorizations(pool)
    assert auth["status"] == "reorged" and "left the canonical chain" in auth["error"]
