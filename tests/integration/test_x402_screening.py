"""x402 payers the screen denies are refused before we settle (issue 16): a deny-listed or
sanctioned payer gets the spec's 402, our relayer spends no gas, the payer's USDC stays
put, no nonce is claimed; a clean payer through the same app still settles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from api.app import create_app
from devkit.anvil import Anvil, calldata, deploy_sanctions_oracle, start_anvil
from devkit.api_support import serve
from devkit.x402kit import (
    BASE_CHAIN_ID,
    PRICE,
    ROUTE,
    World,
    decode_header,
    facilitator_app,
    make_world,
    v1_header,
    v2_header,
)
from watcher import db
from watcher.screening import core


@pytest.fixture
async def base_anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture(autouse=True)
def process_screen() -> Iterator[None]:
    """create_app installs the process's screen: give the next test the one it found."""
    before = core.current()
    yield
    core.install(before)


async def _snapshot(world: World, payer: LocalAccount, pool: db.Pool) -> tuple[Any, ...]:
    relayer_wei = int(await world.node.rpc("eth_getBalance", world.relayer.address, "latest"), 16)
    usdc = await world.token.balance_of(payer.address.lower())
    rows = await pool.fetchval("SELECT count(*) FROM x402_authorizations")
    return relayer_wei, usdc, rows


async def _clean_payer(world: World) -> LocalAccount:
    clean: LocalAccount = Account.create()
    await world.token.mint(clean.address.lower(), 10 * PRICE)
    return clean


def _assert_refused(resp: httpx.Response, reason: str, payer: str) -> None:
    assert resp.status_code == 402, resp.text
    body = resp.json()
    assert body["error"] == reason and payer.lower() in body["message"].lower()
    assert body["accepts"]  # the spec's 402 body: what to pay, again
    required = decode_header(resp.headers["PAYMENT-REQUIRED"])
    assert required["extensions"]["watcher"]["code"] == reason
    failed = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert failed["success"] is False and failed["errorReason"] == reason
    assert failed["transaction"] == "" and failed["network"] == f"eip155:{BASE_CHAIN_ID}"
    assert "paid content" not in resp.text


async def test_a_deny_listed_payer_is_refused_before_the_relayer_spends_gas(
    base_anvil: Anvil, pool: db.Pool, tmp_path: Path
) -> None:
    deny = tmp_path / "deny.txt"
    world = await make_world(base_anvil, x402_denylist_file=str(deny))
    deny.write_text(f"# test\n{world.payer.address.upper().replace('0X', '0x')}\n")
    clean = await _clean_payer(world)
    app = create_app(world.settings, pool)
    before = await _snapshot(world, world.payer, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get(ROUTE, headers=await v2_header(http, world))
        refused_v1 = await http.get(ROUTE, headers=await v1_header(http, world))
        paid = await http.get(ROUTE, headers=await v2_header(http, world, clean))
    _assert_refused(refused, "payer_denied", world.payer.address)
    assert "deny-list" in refused.json()["message"]
    assert refused_v1.status_code == 402 and refused_v1.json()["error"] == "payer_denied"
    assert decode_header(refused_v1.headers["X-PAYMENT-RESPONSE"])["success"] is False
    relayer_wei, usdc, _ = await _snapshot(world, world.payer, pool)
    assert usdc == before[1] == 10 * PRICE  # the denied payer's USDC never moved
    assert paid.status_code == 200, paid.text  # a clean payer still settles
    assert await world.token.balance_of(clean.address.lower()) == 9 * PRICE
    rows = await pool.fetch("SELECT payer, status FROM x402_authorizations")
    assert [(r["payer"], r["status"]) for r in rows] == [(clean.address.lower(), "settled")]
    assert relayer_wei < before[0]  # gas was spent, on the clean payer's settlement only


async def test_the_refusal_costs_nothing_on_chain(
    base_anvil: Anvil, pool: db.Pool, tmp_path: Path
) -> None:
    deny = tmp_path / "deny.txt"
    world = await make_world(base_anvil, x402_denylist_file=str(deny))
    deny.write_text(world.payer.address + "\n")
    app = create_app(world.settings, pool)
    before = await _snapshot(world, world.payer, pool)
    block = await base_anvil.block_number()
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        refused = await http.get(ROUTE, headers=await v2_header(http, world))
    _assert_refused(refused, "payer_denied", world.payer.address)
    assert await _snapshot(world, world.payer, pool) == before  # relayer ETH, USDC, rows
    assert await base_anvil.block_number() == block  # no transaction was sent


async def test_a_deny_listed_payer_never_reaches_the_facilitator(
    base_anvil: Anvil, pool: db.Pool, tmp_path: Path
) -> None:
    deny = tmp_path / "deny.txt"
    world = await make_world(base_anvil)
    deny.write_text(world.payer.address + "\n")
    facilitator = facilitator_app(base_anvil, world.relayer.key.hex())
    async with serve(facilitator) as facilitator_url:
        settings = world.settings.model_copy(
            update={
                "x402_relayer_private_key": None,
                "x402_facilitator_url": facilitator_url,
                "x402_denylist_file": deny,
            }
        )
        app = create_app(settings, pool)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            refused = await http.get(ROUTE, headers=await v2_header(http, world))
    _assert_refused(refused, "payer_denied", world.payer.address)
    assert facilitator.state.calls == []
    assert await world.token.balance_of(world.payer.address.lower()) == 10 * PRICE


async def test_a_sanctioned_payer_is_refused_and_an_unanswered_oracle_refuses_too(
    base_anvil: Anvil, pool: db.Pool
) -> None:
    world = await make_world(base_anvil)
    clean = await _clean_payer(world)
    contract = await deploy_sanctions_oracle(base_anvil, [world.payer.address])
    settings = world.settings.model_copy(
        update={"x402_sanctions_oracle": True, "x402_base_sanctions_oracle_address": contract}
    )
    app = create_app(settings, pool)
    before = await _snapshot(world, world.payer, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        sanctioned = await http.get(ROUTE, headers=await v2_header(http, world))
        assert await _snapshot(world, world.payer, pool) == before
        paid = await http.get(ROUTE, headers=await v2_header(http, world, clean))
        await base_anvil.send(base_anvil.accounts[0], contract, calldata("setBroken(bool)", True))
        other = await _clean_payer(world)  # not cached: the oracle is asked, and reverts
        unanswered = await http.get(ROUTE, headers=await v2_header(http, world, other))
    _assert_refused(sanctioned, "payer_denied", world.payer.address)
    assert "sanctions list" in sanctioned.json()["message"]
    assert paid.status_code == 200, paid.text
    _assert_refused(unanswered, "payer_unscreened", other.address)
    assert await world.token.balance_of(other.address.lower()) == 10 * PRICE
    rows = await pool.fetch("SELECT payer FROM x402_authorizations")
    assert [r["payer"] for r in rows] == [clean.address.lower()]


async def test_the_deny_list_is_reloaded_while_the_api_runs(
    base_anvil: Anvil, pool: db.Pool, tmp_path: Path
) -> None:
    deny = tmp_path / "deny.txt"
    deny.write_text("# nobody yet\n")
    world = await make_world(base_anvil, x402_denylist_file=str(deny))
    app = create_app(world.settings, pool)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        first = await http.get(ROUTE, headers=await v2_header(http, world))
        assert first.status_code == 200, first.text
        # The operator's download job replaces the file while the API serves.
        fresh = tmp_path / "deny.txt.new"
        fresh.write_text(f"# added today\n{world.payer.address}\n")
        fresh.replace(deny)
        listed = core.current().denylist
        assert listed is not None
        deadline = asyncio.get_running_loop().time() + 10
        while listed.lookup(world.payer.address) is None:  # looked at once a second
            assert asyncio.get_running_loop().time() < deadline, "never reloaded"
            await asyncio.sleep(0.1)
        second = await http.get(ROUTE, headers=await v2_header(http, world))
    _assert_refused(second, "payer_denied", world.payer.address)
    assert await world.token.balance_of(world.payer.address.lower()) == 9 * PRICE  # one call
