"""Solana refunds through the real admin API over HTTP, the daemon's refund pass and the
real follower on the local node: sent by our keypair and confirmed; exported as an
unsigned message, signed by the outside wallet, linked and confirmed."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import httpx
from solders.keypair import Keypair
from solders.message import Message
from solders.transaction import Transaction

from api.app import create_app
from devkit.api_support import ADMIN_KEY, serve
from devkit.solana_node import World
from devkit.solana_refundkit import (
    FUNDS,
    Shop,
    follow,
    make_shop,
    paid_by_bob,
    refund_events,
    refund_row,
    shop_settings,
)
from tests.integration.test_daemon import _env
from watcher import db
from watcher.refunds import solana, solana_proof, worker

HEADERS = {"x-admin-key": ADMIN_KEY, "x-admin-operator": "carol@example.com"}


async def test_a_refund_requested_over_http_is_sent_and_confirmed(
    world: World, pool: db.Pool
) -> None:
    shop = make_shop(world)
    settings = shop_settings(
        world, x402_refund_solana_keypair=str(shop.refund), x402_admin_key=ADMIN_KEY
    )
    shop.settings = settings
    pid = await paid_by_bob(shop, pool, 3_000_000)
    async with serve(create_app(settings, pool)) as url, httpx.AsyncClient(base_url=url) as http:
        made = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={"payment_id": pid, "reason": "paid twice", "refund_key": "sol-1"},
        )
        assert made.status_code == 200, made.text
        refund = made.json()
        assert (refund["status"], refund["amount"], refund["destination"]) == (
            "requested",
            "3000000",
            str(shop.bob.pubkey()),
        )
        rid = int(refund["id"])
        assert await worker.run_pass(settings, pool) == {"solana": 1}
        sent = (await http.get(f"/x402/admin/refunds/{rid}", headers=HEADERS)).json()
        assert sent["status"] == "sent" and sent["wallet"] == str(shop.refund.pubkey())
        assert shop.balance(shop.bob.pubkey()) == 3_000_000
        await follow(shop, pool)
        shown = (await http.get(f"/x402/admin/refunds/{rid}", headers=HEADERS)).json()
        refused = await http.get(f"/x402/admin/refunds/{rid}/export?format=solana", headers=HEADERS)
    assert shown["status"] == "confirmed" and shown["out_tx_hash"] == shown["tx_hash"]
    assert await refund_events(pool, rid) == ["refund.requested", "refund.sent", "refund.confirmed"]
    assert refused.status_code == 409 and "X402_REFUND_SOLANA_ADDRESS" in refused.json()["fix"]
    assert await worker.run_pass(settings, pool) == {"solana": 0}
    assert shop.balance(shop.bob.pubkey()) == 3_000_000
    assert shop.balance(shop.refund.pubkey()) == FUNDS - 3_000_000


async def test_an_exported_message_decodes_and_once_signed_is_confirmed(
    world: World, pool: db.Pool
) -> None:
    signer = world.bank.wallet(1)  # a hardware wallet: the server never sees its key
    world.bank.mint_to(world.usdc, signer.pubkey(), FUNDS)
    world.bank.create_ata(world.merchant.pubkey(), world.usdc)
    settings = shop_settings(
        world, x402_refund_solana_address=str(signer.pubkey()), x402_admin_key=ADMIN_KEY
    )
    shop = Shop(world, settings, signer, Keypair())
    pid = await paid_by_bob(shop, pool, 1_234_567)
    async with serve(create_app(settings, pool)) as url, httpx.AsyncClient(base_url=url) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "expired"}
        )
        rid = int(made.json()["id"])
        assert await worker.run_pass(settings, pool) == {}  # no keypair: nothing sends it
        wrong = await http.get(f"/x402/admin/refunds/{rid}/export?format=safe", headers=HEADERS)
        got = await http.get(f"/x402/admin/refunds/{rid}/export?format=solana", headers=HEADERS)
        assert got.status_code == 200, got.text
        after = (await http.get(f"/x402/admin/refunds/{rid}", headers=HEADERS)).json()
    assert wrong.status_code == 422 and wrong.json()["error"] == "invalid_format"
    assert after["status"] == "exported" and after["wallet"] == str(signer.pubkey())
    body = got.json()
    assert (body["format"], body["refund_id"], body["chain"]) == ("solana", rid, "solana")
    doc = body["export"]
    msg = Message.from_bytes(base64.b64decode(doc["message_base64"]))
    keys = list(msg.account_keys)
    create, transfer = msg.instructions  # bob has no associated account: it is created
    assert keys[create.program_id_index] == solana.ATA_PROGRAM
    assert keys[transfer.program_id_index] == solana.TOKEN_PROGRAM
    data = bytes(transfer.data)
    assert (data[0], int.from_bytes(data[1:9], "little"), data[9]) == (12, 1_234_567, 6)
    source, mint, dest, authority = (keys[i] for i in transfer.accounts)
    assert dest == world.bank.ata(shop.bob.pubkey(), world.usdc)
    assert (source, mint, authority) == (
        world.bank.ata(signer.pubkey(), world.usdc),
        world.usdc,
        signer.pubkey(),
    )
    assert doc["fee_payer"] == str(signer.pubkey()) and doc["creates_token_account"] is True
    # The wallet signs the message it was shown and sends it; the follower links it.
    world.node.chain.submit(bytes(Transaction([signer], msg, msg.recent_blockhash)))
    await follow(shop, pool)
    row = await refund_row(pool, rid)
    assert row["status"] == "confirmed" and row["out_tx_hash"] == row["tx_hash"]
    assert shop.balance(shop.bob.pubkey()) == 1_234_567


async def test_a_wallet_the_payer_signs_for_receives_the_refund(
    world: World, pool: db.Pool
) -> None:
    shop = make_shop(world)
    settings = shop_settings(
        world, x402_refund_solana_keypair=str(shop.refund), x402_admin_key=ADMIN_KEY
    )
    shop.settings = settings
    pid = await paid_by_bob(shop, pool, 800_000)
    pay = await pool.fetchrow("SELECT tx_hash, log_index FROM payments WHERE id = $1", pid)
    carol = Keypair().pubkey()
    text = solana_proof.message("solana", pay["tx_hash"], pay["log_index"], str(carol), 800_000)
    good = str(shop.bob.sign_message(text.encode()))
    forged = str(Keypair().sign_message(text.encode()))
    ask = {"payment_id": pid, "reason": "send it to my other wallet", "destination": str(carol)}
    async with serve(create_app(settings, pool)) as url, httpx.AsyncClient(base_url=url) as http:
        bad = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={**ask, "signature": forged, "amount": 800_000},
        )
        bare = await http.post("/x402/admin/refunds", headers=HEADERS, json=ask)
        made = await http.post(
            "/x402/admin/refunds",
            headers=HEADERS,
            json={**ask, "signature": good, "amount": 800_000},
        )
    assert (bad.status_code, bad.json()["error"]) == (403, "bad_proof")
    assert (bare.status_code, bare.json()["error"]) == (403, "proof_required")
    assert made.status_code == 200, made.text
    assert (made.json()["destination"], made.json()["proof"]) == (str(carol), "signature")
    assert await worker.run_pass(settings, pool) == {"solana": 1}
    assert shop.balance(carol) == 800_000 and shop.balance(shop.bob.pubkey()) is None


async def test_watcher_refunds_export_prints_the_solana_message(
    world: World, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    shop = make_shop(world)
    signer = shop.refund  # the outside signer: only its address is configured
    settings = shop_settings(
        world, x402_refund_solana_address=str(signer.pubkey()), x402_admin_key=ADMIN_KEY
    )
    shop.settings = settings
    pid = await paid_by_bob(shop, pool, 600_000)
    async with serve(create_app(settings, pool)) as url, httpx.AsyncClient(base_url=url) as http:
        made = await http.post(
            "/x402/admin/refunds", headers=HEADERS, json={"payment_id": pid, "reason": "x"}
        )
    rid = int(made.json()["id"])
    env = _env(
        tmp_path,
        DATABASE_URL=database_url,
        X402_SOLANA_RPC_URL=world.node.url,
        X402_SOLANA_PAYMENT_ADDRESS=str(world.merchant.pubkey()),
        X402_SOLANA_USDC_MINT=str(world.usdc),
        X402_REFUND_SOLANA_ADDRESS=str(signer.pubkey()),
    )
    args = ["-m", "watcher", "refunds", "export", str(rid), "--json", "--operator", "dave"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, cwd=tmp_path, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)  # the node answers meanwhile
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out.splitlines()[-1])["export"]
    msg = Message.from_bytes(base64.b64decode(doc["message_base64"]))
    transfer = msg.instructions[-1]
    assert int.from_bytes(bytes(transfer.data)[1:9], "little") == 600_000
    assert msg.account_keys[transfer.accounts[2]] == world.bank.ata(shop.bob.pubkey(), world.usdc)
    assert (await refund_row(pool, rid))["status"] == "exported"
