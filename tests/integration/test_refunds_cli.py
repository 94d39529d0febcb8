"""``watcher refunds …`` as an operator runs it: real processes, anvil, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from devkit import refundkit
from devkit.anvil import Anvil, Token
from watcher import db


def env_for(w: refundkit.World, database_url: str, tmp: Path, *, key: bool) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    env.update(
        DATABASE_URL=database_url,
        WATCHER_DATA_DIR=str(tmp / "data"),
        X402_BASE_RPC_URL=w.anvil.url,
        X402_BASE_CHAIN_ID=str(w.anvil.chain_id),
        X402_BASE_USDC_ADDRESS=w.usdc.address,
        X402_BASE_PAYMENT_ADDRESS=w.receiver,
        X402_BASE_CONFIRMATIONS=str(refundkit.CONFIRMATIONS),
    )
    if key:
        env["X402_REFUND_EVM_PRIVATE_KEY"] = "0x" + bytes(w.wallet.key).hex()
    else:
        env["X402_REFUND_EVM_ADDRESS"] = w.wallet_address
    return env


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "watcher", "refunds", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


async def test_create_send_list_and_export_from_the_cli(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    w = await refundkit.world(anvil, usdc)
    pid = await refundkit.pay(w, pool, 1_000_000)
    env = env_for(w, database_url, tmp_path, key=True)
    nobody = await cli(env, "create", str(pid), "--reason", "r")
    assert nobody.returncode == 2 and "--operator" in nobody.stderr
    made = await cli(
        env,
        "create",
        str(pid),
        "--reason",
        "asked",
        "--refund-key",
        "cli-1",
        "--operator",
        "carol",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    refund = json.loads(made.stdout)
    assert refund["status"] == "requested" and refund["requested_by"] == "carol"
    again = await cli(
        env,
        "create",
        str(pid),
        "--reason",
        "asked",
        "--refund-key",
        "cli-1",
        "--operator",
        "carol",
        "--json",
    )
    assert json.loads(again.stdout)["id"] == refund["id"]
    sent = await cli(env, "send", "--operator", "carol", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"base": 1}
    listed = await cli(env, "list", "--status", "sent", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [refund["id"]]
    refused = await cli(env, "create", str(pid), "--reason", "more", "--operator", "carol")
    assert refused.returncode == 1 and "nothing_refundable" in refused.stderr

    pid2 = await refundkit.pay(w, pool, 2_000_000)
    signer = env_for(w, database_url, tmp_path, key=False)
    made2 = await cli(signer, "create", str(pid2), "--reason", "r", "--operator", "carol", "--json")
    exported = await cli(
        signer,
        "export",
        str(json.loads(made2.stdout)["id"]),
        "--format",
        "safe",
        "--operator",
        "carol",
        "--json",
    )
    assert exported.returncode == 0, exported.stderr
    batch = json.loads(exported.stdout)["export"]
    assert batch["transactions"][0]["contractInputsValues"]["value"] == "2000000"
