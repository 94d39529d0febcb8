"""Doctor rows for Stripe (a fake Stripe API over real HTTP, driven by the stripe library)
and Solana (a node faked at the RPC transport seam)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from devkit.anvil import free_port
from watcher import doctor
from watcher.doctor.probes import associated_token_account
from watcher.doctor.report import Check
from watcher.settings import Settings

LIVE_KEY = "sk_live_51HfakeKeyForTheDoctorTests0001"
PRICES = {"pro": "price_1Pro", "team": "price_1Team", "enterprise": "price_1Ent"}


def _price(
    price_id: str, cents: int, *, interval: str = "month", live: bool = True
) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "currency": "usd",
        "unit_amount": cents,
        "livemode": live,
        "type": "recurring",
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed"},
    }


@dataclass
class FakeStripe:
    url: str
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_paths: list[str] = field(default_factory=list)


def _stripe_app(state: FakeStripe) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/prices/{price_id}")
    async def get_price(price_id: str, request: Request) -> JSONResponse:
        state.seen_paths.append(request.url.path)
        if request.headers.get("authorization") != f"Bearer {LIVE_KEY}":
            error = {"type": "invalid_request_error", "message": "Invalid API Key provided"}
            return JSONResponse({"error": error}, status_code=401)
        if price_id not in state.prices:
            error = {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "message": f"No such price: '{price_id}'",
            }
            return JSONResponse({"error": error}, status_code=404)
        return JSONResponse(state.prices[price_id])

    return app


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    port = free_port()
    state = FakeStripe(url=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(_stripe_app(state), host="127.0.0.1", port=port, log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started
    try:
        yield state
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _stripe_settings(key: str = LIVE_KEY) -> Settings:
    return Settings(
        _env_file=None,
        stripe_secret_key=key,
        stripe_webhook_secret="whsec_0123456789abcdefghijklmnop",
        stripe_price_id_pro=PRICES["pro"],
        stripe_price_id_team=PRICES["team"],
        stripe_price_id_enterprise=PRICES["enterprise"],
    )


def _rows(rows: list[Check], group: str) -> dict[str, Check]:
    return {r.name: r for r in rows if r.group == group}


async def test_stripe_prices_with_the_right_amounts_pass(fake_stripe: FakeStripe) -> None:
    fake_stripe.prices = {
        PRICES["pro"]: _price(PRICES["pro"], 8900),
        PRICES["team"]: _price(PRICES["team"], 19900),
        PRICES["enterprise"]: _price(PRICES["enterprise"], 49900),
    }
    rows = _rows(
        await doctor.examine(_stripe_settings(), stripe_api_base=fake_stripe.url), "stripe"
    )
    assert {n: r.status for n, r in rows.items()} == {
        "STRIPE_SECRET_KEY": "ok",
        "STRIPE_WEBHOOK_SECRET": "ok",
        "Stripe API": "ok",
        "STRIPE_PRICE_ID_PRO": "ok",
        "STRIPE_PRICE_ID_TEAM": "ok",
        "STRIPE_PRICE_ID_ENTERPRISE": "ok",
    }
    assert rows["STRIPE_PRICE_ID_TEAM"].value == "price_1Team: $199/month usd"
    assert sorted(fake_stripe.seen_paths) == sorted(f"/v1/prices/{p}" for p in PRICES.values())


async def test_wrong_amount_yearly_missing_and_test_mode_prices_fail(
    fake_stripe: FakeStripe,
) -> None:
    fake_stripe.prices = {
        PRICES["pro"]: _price(PRICES["pro"], 9900),
        PRICES["team"]: _price(PRICES["team"], 19900, interval="year"),
    }
    rows = _rows(
        await doctor.examine(_stripe_settings(), stripe_api_base=fake_stripe.url), "stripe"
    )
    pro, team, ent = (rows[f"STRIPE_PRICE_ID_{t}"] for t in ("PRO", "TEAM", "ENTERPRISE"))
    assert pro.status == "fail" and "8900 usd cents ($89)" in pro.fix
    assert team.status == "fail" and "monthly" in team.fix
    assert ent.status == "fail" and ent.value == "price_1Ent: not found"
    assert rows["Stripe API"].status == "ok"

    fake_stripe.prices = {
        p: _price(p, c, live=False)
        for p, c in zip(PRICES.values(), (8900, 19900, 49900), strict=True)
    }
    rows = _rows(
        await doctor.examine(_stripe_settings(), stripe_api_base=fake_stripe.url), "stripe"
    )
    assert "other mode" in rows["STRIPE_PRICE_ID_PRO"].fix


async def test_a_rejected_key_and_an_unreachable_stripe_fail(fake_stripe: FakeStripe) -> None:
    other = "sk_live_51HsomeoneElsesRevokedKey99"
    rows = _rows(
        await doctor.examine(_stripe_settings(other), stripe_api_base=fake_stripe.url), "stripe"
    )
    assert rows["Stripe API"].status == "fail" and rows["Stripe API"].value == "key rejected"
    dead = f"http://127.0.0.1:{free_port()}"
    rows = _rows(
        await doctor.examine(_stripe_settings(), stripe_api_base=dead, seconds=2.0), "stripe"
    )
    assert rows["Stripe API"].status == "fail" and rows["Stripe API"].value.startswith(
        "unreachable"
    )


def test_test_mode_keys_and_bad_shapes_fail_without_network() -> None:
    settings = _stripe_settings("sk_test_51Habcdefghijklmnopqrstuvwx").model_copy(
        update={"stripe_webhook_secret": None, "stripe_price_id_team": "prod_123"}
    )
    from watcher.doctor import config

    rows = {r.name: r for r in config.settings_checks(settings)}
    assert (
        rows["STRIPE_SECRET_KEY"].status == "fail" and "test mode" in rows["STRIPE_SECRET_KEY"].fix
    )
    assert rows["STRIPE_WEBHOOK_SECRET"].status == "fail"
    assert rows["STRIPE_PRICE_ID_TEAM"].status == "fail"
    restricted = config.stripe_mode("rk_live_abc")
    assert restricted == "live" and config.stripe_mode("pk_live_abc") is None


# ---- Solana, faked at the transport seam ------------------------------------------------------

TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
MINT = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
MAINNET_GENESIS = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
# From the vendored mainnet transaction (tests/fixtures/mainnet/solana): owner -> its USDC ATA.
OWNER = "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M"
OWNER_ATA = "Efc6bp3wVC2iQpewxRmKdZM8vzt9DCFFhL7EiHYNGunv"


def test_associated_token_account_matches_mainnet() -> None:
    assert associated_token_account(OWNER, TOKEN_PROGRAM, MINT) == OWNER_ATA
    assert (
        associated_token_account(
            "3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg", TOKEN_PROGRAM, MINT
        )
        == "2e3Eb9tkT8252WhFR26Xz6SKoiatJScuMW1BHgGqPvvc"
    )


def _mint_account(decimals: int) -> dict[str, Any]:
    parsed = {"type": "mint", "info": {"decimals": decimals, "isInitialized": True, "supply": "1"}}
    return {
        "owner": TOKEN_PROGRAM,
        "lamports": 1461600,
        "executable": False,
        "data": {"program": "spl-token", "parsed": parsed, "space": 82},
    }


def _token_account(mint: str, owner: str) -> dict[str, Any]:
    parsed = {"type": "account", "info": {"mint": mint, "owner": owner, "state": "initialized"}}
    return {
        "owner": TOKEN_PROGRAM,
        "lamports": 2039280,
        "executable": False,
        "data": {"program": "spl-token", "parsed": parsed, "space": 165},
    }


def solana_node(
    accounts: dict[str, dict[str, Any]], genesis: str = MAINNET_GENESIS, block_age: int = 5
) -> httpx.MockTransport:
    import time

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        method, params = body["method"], body["params"]
        result: Any
        if method == "getGenesisHash":
            result = genesis
        elif method == "getSlot":
            result = 300_000_000
        elif method == "getBlockTime":
            result = int(time.time()) - block_age
        elif method == "getAccountInfo":
            result = {"context": {"slot": 300_000_000}, "value": accounts.get(params[0])}
        else:
            return httpx.Response(
                200,
                json={
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "error": {"code": -32601, "message": "no"},
                },
            )
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    return httpx.MockTransport(handle)


def _sol_settings() -> Settings:
    return Settings(
        _env_file=None, x402_solana_rpc_url="https://sol.example", x402_solana_payment_address=OWNER
    )


async def _sol_rows(transport: httpx.MockTransport) -> dict[str, Check]:
    rows = await doctor.examine(_sol_settings(), transport=transport)
    return {r.name: r for r in rows if r.group in ("rpc", "contracts")}


async def test_solana_mint_and_receiving_account_pass() -> None:
    node = solana_node({MINT: _mint_account(6), OWNER_ATA: _token_account(MINT, OWNER)})
    rows = await _sol_rows(node)
    assert rows["solana https://sol.example"].status == "ok"
    assert rows["solana https://sol.example"].value.startswith("finalized slot 300000000")
    assert rows["solana USDC mint"].status == "ok"
    ata = rows["solana receiving token account"]
    assert ata.status == "ok" and ata.value.startswith(OWNER_ATA)


async def test_solana_missing_ata_warns_and_wrong_decimals_or_cluster_fail() -> None:
    rows = await _sol_rows(solana_node({MINT: _mint_account(6)}))
    ata = rows["solana receiving token account"]
    assert ata.status == "warn" and "spl-token create-account" in ata.fix

    rows = await _sol_rows(solana_node({MINT: _mint_account(9)}))
    assert (
        rows["solana USDC mint"].status == "fail" and "9 decimals" in rows["solana USDC mint"].value
    )
    assert "solana receiving token account" not in rows

    rows = await _sol_rows(solana_node({}, genesis="EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"))
    assert rows["solana https://sol.example"].status == "fail"
    assert rows["solana USDC mint"].status == "fail"  # the mint does not exist on devnet

    rows = await _sol_rows(solana_node({MINT: _mint_account(6)}, block_age=3600))
    assert rows["solana https://sol.example"].status == "fail"
    assert "stuck" in rows["solana https://sol.example"].fix
