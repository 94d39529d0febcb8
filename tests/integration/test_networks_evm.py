"""Every EVM network added as a registry row works with nothing written for it but the row.

Parametrized over the registry's EVM rows other than the two we started with, so a
row added later is tested here without a line changed. For each: settings from
``X402_<ENV>_*`` overrides alone, the daemon's followers, a credit on an anvil that
reports the row's chain id (at exactly the row's default confirmations), an
endpoint of another chain refused, the 402's v2 and v1 offers, and the doctor's
probe rows. The local token stands in for USDC through ``X402_<ENV>_USDC_ADDRESS``,
the override documented for local chains; the chain id is never overridden, so the
row's own id is what the follower and the doctor check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from pydantic import SecretStr

from api.app import create_app
from devkit import api_support, evmkit
from devkit.anvil import Anvil, Token, deploy_token, free_port, start_anvil
from devkit.x402kit import PRICE, ROUTE, decode_header
from watcher import chain_settings, daemon, db, doctor, errors, explain, keys, networks
from watcher.chains import evm, evm_follower
from watcher.doctor.report import Check
from watcher.settings import Settings

ORIGINAL = ("base", "ethereum")
ADDED = [row for row in networks.of_family("evm") if row.name not in ORIGINAL]
AMOUNT = 1_234_567


def by_name(rows: list[networks.Network]) -> Any:
    return pytest.mark.parametrize("row", rows, ids=[r.name for r in rows])


def env_settings(
    row: networks.Network, other: dict[str, Any] | None = None, **suffixes: Any
) -> Settings:
    """Settings as the environment gives them: ``X402_<ENV>_<SUFFIX>`` for this row, plus
    ``other`` variables by their full names."""
    p = chain_settings.prefix(row)
    return Settings(_env_file=None, **(other or {}), **{p + k: v for k, v in suffixes.items()})


@pytest.fixture
async def row_anvil(row: networks.Network) -> AsyncIterator[tuple[Anvil, Token]]:
    """An anvil reporting the row's chain id, with the test USDC minted to account 1."""
    assert row.chain_id is not None
    node = await start_anvil(chain_id=row.chain_id)
    try:
        token = await deploy_token(node)
        await token.mint(node.accounts[1], 1_000 * 10**6)
        yield node, token
    finally:
        await node.close()


def _one(rows: list[Check], name: str) -> Check:
    found = [r for r in rows if r.name == name]
    assert len(found) == 1, f"{name}: {[r.name for r in rows]}"
    return found[0]


def test_the_added_rows_are_the_issue_s_six() -> None:
    # The parametrization below reads the registry: this pins that it found them (first,
    # in registry order; a row added later joins the list and is tested the same way).
    assert [r.name for r in ADDED][:6] == [
        "arbitrum", "optimism", "polygon", "avalanche", "base-sepolia", "sepolia",
    ]  # fmt: skip


@by_name(ADDED)
async def test_settings_alone_follow_and_credit_at_the_row_s_confirmations(
    row: networks.Network,
    row_anvil: tuple[Anvil, Token],
    pool: db.Pool,
    database_url: str,
    tmp_path: Path,
) -> None:
    node, token = row_anvil
    payer, us = node.accounts[1], node.accounts[7]
    settings = env_settings(
        row,
        rpc_url=node.url,
        payment_address=keys.checksummed(us),
        usdc_address=token.checksum,
    )
    assert [f.chain for f in daemon.build_followers(settings, pool)] == [row.name]
    (chain,) = evm.enabled_chains(settings)  # what the daemon's follower is built from
    assert (chain.name, chain.chain_id) == (row.name, row.chain_id)
    assert chain.confirmations == row.confirmations

    paid = await token.transfer(payer, us, AMOUNT)
    block = int(paid["blockNumber"], 16)
    depth = row.confirmations or 0
    async with evmkit.follower(chain, pool) as f:
        if depth > 1:  # one block short of the row's confirmations: seen, not credited
            await node.mine(depth - 2)
            await evmkit.drain(f)
            (seen,) = await evmkit.payments(pool)
            assert seen["state"] == "observed"
            await node.mine(1)
        await evmkit.drain(f)
    head = await node.block_number()
    assert head == block + depth - 1  # the payment's block is exactly `depth` deep
    (got,) = await evmkit.payments(pool)
    assert (got["chain"], got["state"], got["amount"]) == (row.name, "credited", AMOUNT)
    assert (got["tx_hash"], got["to_address"], got["token"]) == (
        paid["transactionHash"],
        us,
        token.address,
    )
    async with pool.acquire() as conn:
        cursors = await conn.fetch("SELECT chain, stream, num FROM cursors")
    assert [tuple(c) for c in cursors] == [(row.name, "logs", head)]

    await _doctor_probes_pass(row, node, settings, tmp_path)
    await _explain_credits_it(row, settings, paid["transactionHash"], depth, database_url)


async def _doctor_probes_pass(
    row: networks.Network, node: Anvil, settings: Settings, tmp_path: Path
) -> None:
    """The doctor's probes on the same settings: the row's chain id answered, USDC found."""
    rows = await asyncio.wait_for(
        doctor.examine(settings.model_copy(update={"watcher_data_dir": tmp_path}), seconds=5.0),
        60,
    )
    endpoint = _one(rows, f"{row.name} http://127.0.0.1:{node.port}")
    assert endpoint.status == "ok", endpoint
    assert endpoint.value.startswith(f"chain {row.chain_id}, head ")
    contract = _one(rows, f"{row.name} USDC contract")
    assert contract.status == "ok" and "6 decimals" in contract.value, contract


def _explain_args(row: networks.Network, tx: str | None) -> argparse.Namespace:
    # What `watcher explain --chain <name> --json TX` parses to: receiver and token unset,
    # so the row's settings say what counts.
    return argparse.Namespace(
        chain=row.name, tx=tx, from_file=None, receiver=[], token=None, json=True
    )


async def _explain_credits_it(
    row: networks.Network, settings: Settings, tx: str, depth: int, database_url: str
) -> None:
    """``watcher explain`` live on the row's RPC, with the ledger: credit, credited, depth."""
    with_ledger = settings.model_copy(update={"database_url": SecretStr(database_url)})
    out, code = await explain.run(_explain_args(row, tx), with_ledger)
    assert code == 0, out
    doc = json.loads(out)
    assert doc["chain"] == row.name and doc["credit_total"] == str(AMOUNT)
    ((transfer,),) = [t["transfers"] for t in doc["transactions"]]
    assert (transfer["verdict"], transfer["state"]) == ("credit", "credited")
    assert (transfer["amount"], transfer["confirmations"]) == (str(AMOUNT), depth)


def test_explain_without_an_rpc_url_names_the_row_s_variable() -> None:
    for row in ADDED:
        out, code = asyncio.run(
            explain.run(_explain_args(row, "0x" + "ab" * 32), env_settings(row))
        )
        assert code == 2
        assert f"set X402_{row.env}_RPC_URL" in out, out


@by_name(ADDED)
async def test_an_endpoint_of_another_chain_is_refused_and_nothing_credited(
    row: networks.Network, anvil: Anvil, usdc: Token, pool: db.Pool, tmp_path: Path
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]  # a plain anvil: chain id 31337
    await usdc.transfer(payer, us, AMOUNT)
    await anvil.mine(row.confirmations or 1)
    settings = env_settings(row, rpc_url=anvil.url, payment_address=us, usdc_address=usdc.address)
    (chain,) = evm.enabled_chains(settings)
    fast = evm_follower.Options(max_backoff=0.01)  # burst gives up after its failures, quickly
    async with evmkit.follower(chain, pool, options=fast) as f:
        with pytest.raises(errors.RpcError):
            await evmkit.drain(f)
        (status,) = f.rpc.status()
    assert status.refused == f"chain id 31337, expected {row.chain_id}"
    assert await evmkit.payments(pool) == []
    assert await evmkit.cursor(pool, row.name) is None

    rows = await asyncio.wait_for(
        doctor.examine(settings.model_copy(update={"watcher_data_dir": tmp_path}), seconds=5.0),
        60,
    )
    endpoint = _one(rows, f"{row.name} http://127.0.0.1:{anvil.port}")
    assert endpoint.status == "fail"
    assert endpoint.value == f"chain id 31337, expected {row.chain_id}"


@by_name(ADDED)
async def test_the_402_offers_the_row_s_caip2_usdc_and_eip712_domain(
    row: networks.Network, pool: db.Pool
) -> None:
    receiver = Account.create().address
    relayer = {"x402_relayer_private_key": Account.create().key.hex()}
    # The RPC URL is never called on the way to a 402: nothing listens there.
    dead = f"http://127.0.0.1:{free_port()}"
    settings = env_settings(row, relayer, payment_address=receiver, rpc_url=dead)
    async with api_support.client(create_app(settings, pool)) as http:
        resp = await http.get(ROUTE)
    assert resp.status_code == 402, resp.text
    required = decode_header(resp.headers["PAYMENT-REQUIRED"])
    (offer,) = required["accepts"]  # the one network configured
    assert offer["network"] == row.caip2
    assert offer["asset"] == row.usdc == keys.checksummed(row.usdc)
    assert offer["extra"] == {"name": row.eip712_name, "version": row.eip712_version}
    assert (offer["payTo"], offer["amount"]) == (receiver, str(PRICE))

    v1 = resp.json()["accepts"]
    if row.x402_v1 is None:  # the x402 package has no v1 name for it: v2 only
        assert v1 == []
    else:
        (entry,) = v1
        assert entry["network"] == row.x402_v1
        assert (entry["asset"], entry["payTo"]) == (row.usdc, receiver)
        assert entry["extra"] == {
            "name": row.eip712_name,
            "version": row.eip712_version,
            "decimals": 6,
        }


@by_name(ADDED)
async def test_the_api_names_the_row_for_invoices_claims_and_chains(
    row: networks.Network, pool: db.Pool
) -> None:
    receiver, payer = Account.create().address, Account.create()
    settings = env_settings(
        row, {"x402_admin_key": api_support.ADMIN_KEY}, payment_address=receiver
    )
    async with api_support.client(create_app(settings, pool)) as http:
        listed = (await http.get("/x402/supported-chains")).json()["chains"]
        (entry,) = [c for c in listed if c["chain"] == row.name]
        assert (entry["accepting"], entry["pay_to"], entry["asset"]) == (True, receiver, row.usdc)
        assert (entry["chain_id"], entry["confirmations"]) == (row.chain_id, row.confirmations)
        assert [c["chain"] for c in listed if c["accepting"]] == [row.name]

        created = await http.post("/x402/invoices", json={"chain": row.name, "requests": 3})
        assert created.status_code == 201, created.text
        invoice = created.json()
        assert (invoice["chain"], invoice["pay_to"].lower()) == (row.name, receiver.lower())
        assert invoice["asset"].lower() == row.usdc.lower()

        _, tx = await api_support.record_payment(
            pool,
            chain=row.name,
            from_address=payer.address.lower(),
            to_address=receiver.lower(),
            token=row.usdc.lower(),
        )
        signature = api_support.evm_sign(payer, row.name, tx)
        claimed = await http.post(
            "/x402/generate-token", json={"chain": row.name, "tx_hash": tx, "signature": signature}
        )
        assert claimed.status_code == 201, claimed.text
        token = claimed.json()["token"]
        served = await http.get(ROUTE, headers={"x-payment-token": token})
        assert served.status_code == 200, served.text
    assert await pool.fetchval("SELECT state FROM payments WHERE tx_hash = $1", tx) == "claimed"
