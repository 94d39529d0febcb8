"""Every Solana network added as a registry row works with nothing written for it but the row.

Parametrized over the registry's Solana rows other than mainnet (today: devnet), so
a row added later is tested without a line changed. The LiteSVM node answers
``getGenesisHash`` with the row's genesis hash; settings come from
``X402_<ENV>_*`` alone (the test mint standing in for USDC through ``_USDC_MINT``,
the documented override for a local cluster); the genesis hash and CAIP-2 id are
never overridden, so the row's own are what the follower, the doctor and the x402
offer use.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from solders.keypair import Keypair

from api.app import create_app
from api.claims import claim_message
from devkit import api_support
from devkit.anvil import free_port
from devkit.solana_node import SolanaNode, World, render, usdc_world
from devkit.x402svmkit import PRICE, ROUTE, decode_header
from watcher import chain_settings, daemon, db, doctor, errors, networks
from watcher.__main__ import main
from watcher.chains import solana
from watcher.doctor.report import Check
from watcher.settings import Settings

MAINNET = networks.get("solana")
ADDED = [row for row in networks.of_family("solana") if row.name != MAINNET.name]
AMOUNT = 1_500_000

by_name = pytest.mark.parametrize("row", ADDED, ids=[r.name for r in ADDED])


def env_settings(
    row: networks.Network, other: dict[str, Any] | None = None, **suffixes: Any
) -> Settings:
    """Settings as the environment gives them: ``X402_<ENV>_<SUFFIX>`` for this row, plus
    ``other`` variables by their full names."""
    p = chain_settings.prefix(row)
    return Settings(_env_file=None, **(other or {}), **{p + k: v for k, v in suffixes.items()})


def world_settings(row: networks.Network, world: World, **more: Any) -> Settings:
    return env_settings(
        row,
        rpc_url=world.node.url,
        payment_address=str(world.merchant.pubkey()),
        usdc_mint=str(world.usdc),
        **more,
    )


@pytest.fixture
async def row_world(row: networks.Network) -> AsyncIterator[World]:
    """The node standing in for the row's cluster, with a USDC-like mint and a payer."""
    assert row.genesis_hash is not None
    node = SolanaNode(finality_depth=2, genesis_hash=row.genesis_hash)
    await node.start()
    try:
        yield usdc_world(node)
    finally:
        await node.close()


async def rows(pool: db.Pool, chain: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(db.q("solana_payments_summary"), chain)]


def _one(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert len(found) == 1, f"{name}: {[c.name for c in checks]}"
    return found[0]


def test_the_added_rows_are_devnet() -> None:
    # The parametrization reads the registry: this pins that it found the row
    # (a row added later joins the list and is tested the same way).
    assert ADDED[0].name == "solana-devnet"
    assert ADDED[0].genesis_hash == "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"


@by_name
async def test_settings_alone_follow_and_credit_on_the_row_s_cluster(
    row: networks.Network, row_world: World, pool: db.Pool
) -> None:
    settings = world_settings(row, row_world)
    assert [f.chain for f in daemon.build_followers(settings, pool)] == [row.name]
    sig = row_world.bank.pay(
        row_world.alice, row_world.usdc, row_world.merchant.pubkey(), AMOUNT, create_ata=True
    )
    f = solana.make_follower(settings, pool, row.name, poll_interval=0.05)
    try:
        await f.sync_once()
        (seen,) = await rows(pool, row.name)
        assert seen["state"] == "observed"  # confirmed, not yet finalized
        row_world.node.chain.advance(2)
        await f.sync_once()
    finally:
        await f.rpc.aclose()
    (got,) = await rows(pool, row.name)
    assert (got["tx_hash"], got["state"], int(got["amount"])) == (sig, "credited", AMOUNT)
    assert (got["to_address"], got["token"]) == (
        str(row_world.merchant.pubkey()),
        str(row_world.usdc),
    )
    async with pool.acquire() as conn:
        chains = await conn.fetch(
            "SELECT DISTINCT chain FROM payments UNION SELECT chain FROM cursors"
        )
    assert [c["chain"] for c in chains] == [row.name]


@by_name
async def test_websocket_reconnects_are_counted_under_the_row_s_name(
    row: networks.Network, row_world: World, pool: db.Pool
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}"  # nothing listens: every connect fails at once
    settings = world_settings(row, row_world, ws_url=dead)
    labels = {r.name: {"chain": r.name} for r in (row, MAINNET)}

    def count(name: str) -> float:
        return REGISTRY.get_sample_value("watcher_ws_reconnects_total", labels[name]) or 0.0

    before = {name: count(name) for name in labels}
    f = solana.make_follower(settings, pool, row.name, poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(stop))
    try:
        for _ in range(200):  # bounded: the first reconnect comes at once
            if count(row.name) > before[row.name] or task.done():
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert count(row.name) > before[row.name]
    assert count(MAINNET.name) == before[MAINNET.name]


@by_name
async def test_the_mainnet_row_on_the_row_s_cluster_is_refused(
    row: networks.Network, row_world: World, pool: db.Pool
) -> None:
    row_world.bank.pay(
        row_world.alice, row_world.usdc, row_world.merchant.pubkey(), AMOUNT, create_ata=True
    )
    row_world.node.chain.advance(2)
    settings = world_settings(MAINNET, row_world)
    f = solana.make_follower(settings, pool, MAINNET.name, poll_interval=0.05)
    try:
        with pytest.raises(errors.RpcError):
            await f.sync_once()
        (status,) = f.rpc.status()
    finally:
        await f.rpc.aclose()
    assert status.refused == f"genesis hash {row.genesis_hash}, expected {MAINNET.genesis_hash}"
    assert await pool.fetchval("SELECT count(*) FROM payments") == 0


@by_name
async def test_the_402_offers_the_row_s_network_mint_and_fee_payer(
    row: networks.Network, row_world: World, pool: db.Pool
) -> None:
    fee_payer = Keypair()
    settings = world_settings(row, row_world, fee_payer_private_key=str(fee_payer))
    async with api_support.client(create_app(settings, pool)) as http:
        resp = await http.get(ROUTE)
    assert resp.status_code == 402, resp.text
    (offer,) = decode_header(resp.headers["PAYMENT-REQUIRED"])["accepts"]
    assert offer["network"] == row.caip2 == f"solana:{str(row.genesis_hash)[:32]}"
    assert (offer["asset"], offer["payTo"]) == (
        str(row_world.usdc),
        str(row_world.merchant.pubkey()),
    )
    assert offer["extra"] == {"feePayer": str(fee_payer.pubkey())}
    assert offer["amount"] == str(PRICE)
    (entry,) = resp.json()["accepts"]
    assert entry["network"] == row.x402_v1
    assert entry["asset"] == str(row_world.usdc)
    assert entry["extra"] == {"decimals": 6, "feePayer": str(fee_payer.pubkey())}


def test_devnet_caip2_is_the_x402_package_s() -> None:
    from x402.mechanisms.svm.constants import SOLANA_DEVNET_CAIP2

    assert networks.get("solana-devnet").caip2 == SOLANA_DEVNET_CAIP2
    assert SOLANA_DEVNET_CAIP2 == "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"


@by_name
async def test_doctor_probes_the_row_s_cluster(
    row: networks.Network, row_world: World, tmp_path: Path, database_url: str
) -> None:
    settings = world_settings(
        row, row_world, other={"watcher_data_dir": tmp_path, "database_url": database_url}
    )
    row_world.node.chain.advance(2)  # the mint's creation is finalized
    checks = await asyncio.wait_for(doctor.examine(settings, seconds=5.0), 60)
    endpoint = _one(checks, f"{row.name} {row_world.node.url}")
    assert endpoint.status == "ok", endpoint
    assert endpoint.value.startswith("finalized slot ")
    mint = _one(checks, f"{row.name} USDC mint")
    assert mint.status == "ok" and "6 decimals" in mint.value, mint


@by_name
async def test_doctor_fails_a_node_of_mainnet_for_the_row(
    row: networks.Network, tmp_path: Path, database_url: str
) -> None:
    async with SolanaNode(genesis_hash=MAINNET.genesis_hash or "") as node:
        world = usdc_world(node)
        settings = world_settings(
            row, world, other={"watcher_data_dir": tmp_path, "database_url": database_url}
        )
        checks = await asyncio.wait_for(doctor.examine(settings, seconds=5.0), 60)
    endpoint = _one(checks, f"{row.name} {node.url}")
    assert endpoint.status == "fail"
    mainnet = str(MAINNET.genesis_hash)
    assert endpoint.value == f"cluster genesis {mainnet[:8]}…, not {row.title}'s"


@by_name
async def test_explain_judges_a_saved_transaction_with_the_row_s_settings(
    row: networks.Network,
    row_world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bank, merchant = row_world.bank, row_world.merchant.pubkey()
    paid = bank.pay(row_world.alice, row_world.usdc, merchant, AMOUNT, create_ata=True)
    other = bank.pay(row_world.alice, row_world.usdc, Keypair().pubkey(), AMOUNT, create_ata=True)
    chain = row_world.node.chain
    saved = [render.transaction(chain.by_sig[s], "jsonParsed", 0) for s in (paid, other)]
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    # The receiver and the mint come from the row's variables, not from flags.
    var = chain_settings.prefix(row).upper()
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("WATCHER_DATA_DIR", str(tmp_path / "no-ledger"))  # no embedded one
    monkeypatch.setenv(var + "PAYMENT_ADDRESS", str(merchant))
    monkeypatch.setenv(var + "USDC_MINT", str(row_world.usdc))
    argv = ["explain", "--chain", row.name, "--json", "--from-file", str(path)]
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(out)
    assert doc["chain"] == row.name and doc["credit_total"] == str(AMOUNT)
    verdicts = {t["tx"]: [x["verdict"] for x in t["transfers"]] for t in doc["transactions"]}
    assert verdicts == {paid: ["credit"], other: ["not_ours"]}


@by_name
async def test_the_api_names_the_row_for_invoices_claims_and_chains(
    row: networks.Network, pool: db.Pool
) -> None:
    owner, payer = str(Keypair().pubkey()), Keypair()
    settings = env_settings(row, {"x402_admin_key": api_support.ADMIN_KEY}, payment_address=owner)
    async with api_support.client(create_app(settings, pool)) as http:
        listed = (await http.get("/x402/supported-chains")).json()["chains"]
        (entry,) = [c for c in listed if c["chain"] == row.name]
        assert (entry["accepting"], entry["pay_to"], entry["asset"]) == (True, owner, row.usdc)
        assert entry["commitment"] == row.commitment
        assert [c["chain"] for c in listed if c["accepting"]] == [row.name]

        created = await http.post("/x402/invoices", json={"chain": row.name, "requests": 3})
        assert created.status_code == 201, created.text
        invoice = created.json()
        assert (invoice["chain"], invoice["pay_to"], invoice["asset"]) == (
            row.name,
            owner,
            row.usdc,
        )

        sig = str(Keypair().sign_message(b"a transaction"))  # a signature-shaped id
        await api_support.record_payment(
            pool,
            chain=row.name,
            tx_hash=sig,
            from_address=str(payer.pubkey()),
            to_address=owner,
            token=row.usdc,
        )
        signed = str(payer.sign_message(claim_message(row.name, sig).encode()))
        claimed = await http.post(
            "/x402/generate-token", json={"chain": row.name, "tx_hash": sig, "signature": signed}
        )
        assert claimed.status_code == 201, claimed.text
        served = await http.get(ROUTE, headers={"x-payment-token": claimed.json()["token"]})
        assert served.status_code == 200, served.text
    assert await pool.fetchval("SELECT state FROM payments WHERE tx_hash = $1", sig) == "claimed"
