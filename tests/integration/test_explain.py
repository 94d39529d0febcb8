"""`watcher explain` as an operator runs it: recorded mainnet answers, and files made on anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from devkit.anvil import Anvil, Token, deploy_token
from devkit.evmkit import drain, evm_chain, follower
from watcher import db

ROOT = Path(__file__).resolve().parents[2]
MAINNET = ROOT / "tests" / "fixtures" / "mainnet" / "ethereum"
BLOCK_18M = MAINNET / "erigon_eth_getBlockReceipts_block_18000000.json"
LEGACY = MAINNET / "ethereumetl_eth_getFilterLogs_block_483920_legacy_format.json"
USDC_MAINNET = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
POISON_TX = "0x6742cd57e6aefce4b96887bb3090371ac49414c6b45a21e43d9e41e0ea9ed5ab"
LEGACY_TOKEN = "0xf4eced2f682ce333f96f2d8966c613ded8fc95dd"


def explain(*args: str, **env: str) -> tuple[int, str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    clean.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "explain", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    return proc.returncode, proc.stdout, proc.stderr


def explain_json(*args: str, **env: str) -> dict[str, Any]:
    code, out, err = explain(*args, "--json", **env)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def credits(report: dict[str, Any]) -> list[tuple[str, int, str, int]]:
    return [
        (tx["tx"], t["log_index"], t["to"], int(t["amount"]))
        for tx in report["transactions"]
        for t in tx["transfers"]
        if t["verdict"] == "credit"
    ]


def test_block_18000000_receipts_give_exactly_the_two_known_usdc_payments() -> None:
    ours = [
        "0x91a559d248a216d1dd17c4d39f51bda9bd1de7e2",
        "0xdf455882303fa4fa16bd96da7f0ae3b13983cc4c",
    ]
    poisoned = "0xacf44ceb7cacd31acfb04e45c548f121c1e8e20a"
    report = explain_json(
        "--chain", "ethereum", "--from-file", str(BLOCK_18M),
        *[a for r in [*ours, poisoned] for a in ("--receiver", r)],
    )  # fmt: skip
    got = sorted((to, amount, index) for _, index, to, amount in credits(report))
    assert got == [(ours[0], 1_800_000_000, 176), (ours[1], 8_000_000_000, 66)]
    assert report["credit_total"] == "9800000000"
    assert report["chain"] == "ethereum" and len(report["transactions"]) == 94
    (poison,) = [tx for tx in report["transactions"] if tx["tx"] == POISON_TX]
    zero = [t for t in poison["transfers"] if t["token"] == USDC_MAINNET and t["amount"] == "0"]
    assert len(zero) == 9
    assert {t["verdict"] for t in zero} == {"zero_value", "not_ours"}
    assert [t["to"] for t in zero if t["verdict"] == "zero_value"] == [poisoned]
    failed = [tx for tx in report["transactions"] if tx["status"] == "failed"]
    assert len(failed) == 2 and all(tx["transfers"] == [] for tx in failed)


def test_one_transaction_of_the_block_and_the_human_output() -> None:
    tx = "0x513a4abc"  # prefix: the README names it 0x513a4abc…fc88
    report = explain_json(
        "--chain", "ethereum", "--from-file", str(BLOCK_18M),
        "--receiver", "0x91a559d248a216d1dd17c4d39f51bda9bd1de7e2",
    )  # fmt: skip
    (full,) = [t["tx"] for t in report["transactions"] if t["tx"].startswith(tx)]
    assert full.endswith("fc88")
    code, out, _ = explain(
        "--chain", "ethereum", full.upper().replace("0X", "0x"), "--from-file", str(BLOCK_18M),
        "--receiver", "0x91A559D248a216d1dD17C4D39F51bdA9bd1DE7e2",
    )  # fmt: skip
    assert code == 0
    assert "log 176: 1800.00 USDC" in out and "=> credit" in out
    assert "0x91A559D248a216d1dD17C4D39F51bdA9bd1DE7e2" in out  # shown checksummed
    assert "credit total: 1800.00 USDC (1800000000 base units)" in out


def test_legacy_logs_without_removed_field() -> None:
    receivers = [
        "0xac4df82fe37ea2187bc8c011a23d743b4f39019a",
        "0x66f183060253cfbe45beff1e6e7ebbe318c81e56",
    ]
    args = ["--chain", "ethereum", "--from-file", str(LEGACY)]
    args += [a for r in receivers for a in ("--receiver", r)]
    as_usdc = explain_json(*args)
    assert credits(as_usdc) == [] and as_usdc["credit_total"] == "0"
    verdicts = {t["verdict"] for tx in as_usdc["transactions"] for t in tx["transfers"]}
    assert verdicts == {"wrong_token"}
    as_token = explain_json(*args, "--token", LEGACY_TOKEN)
    assert sorted((to, amount) for _, _, to, amount in credits(as_token)) == sorted(
        zip(receivers, [100_000, 200_000], strict=True)
    )


def test_bad_input_is_refused_with_a_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    code, _, err = explain("--chain", "base", "--from-file", str(junk))
    assert code == 2 and "neither a receipt nor a log" in err
    code, _, err = explain("--chain", "base", "--from-file", str(LEGACY), "--receiver", "0x12")
    assert code == 2 and "--receiver" in err
    code, _, err = explain("--chain", "base")
    assert code == 2 and "TX_HASH" in err


async def test_files_made_on_anvil_with_ledger_state(
    anvil: Anvil, usdc: Token, pool: db.Pool, database_url: str, tmp_path: Path
) -> None:
    payer, us, them = anvil.accounts[1], anvil.accounts[7], anvil.accounts[8]
    fake = await deploy_token(anvil, "USD Coin", "USDC")
    await fake.mint(payer, 10**9)
    paid = await usdc.batch_transfer(payer, [us, them, us, us], [2_000_000, 1, 0, 50_000])
    wrong = await fake.transfer(payer, us, 9_000_000)
    await anvil.mine(2)
    async with follower(evm_chain(anvil, usdc, [us], confirmations=3), pool) as f:
        await drain(f)
    block = int(paid["blockNumber"], 16)
    logs = await anvil.rpc("eth_getLogs", {"fromBlock": hex(block), "toBlock": "latest"})
    receipts = await anvil.rpc("eth_getBlockReceipts", hex(block))
    files = {
        "receipt": {"jsonrpc": "2.0", "id": 7, "result": paid},
        "receipts": receipts,
        "logs": logs,
    }
    env = {
        "X402_BASE_USDC_ADDRESS": usdc.address,
        "X402_BASE_PAYMENT_ADDRESS": us,
        "DATABASE_URL": database_url,
    }
    for name, content in files.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        report = explain_json("--chain", "base", "--from-file", str(path), **env)
        by_tx = {tx["tx"]: tx for tx in report["transactions"]}
        lines = by_tx[paid["transactionHash"]]["transfers"]
        assert [(t["verdict"], t.get("state")) for t in lines] == [
            ("credit", "credited"),
            ("not_ours", "not_recorded"),
            ("zero_value", "not_recorded"),
            ("below_minimum", "below_minimum"),
        ], name
        assert lines[0]["confirmations"] == 4 and lines[0]["from"] == payer
        # What the ledger told the merchant's systems: one credited event (a straight
        # credit of a deep transfer), none for what was not recorded.
        assert [e.split(" (")[0] for e in lines[0]["events"]] == ["payment.credited"]
        assert "events" not in lines[1] and lines[3]["events"] == []
        assert report["credit_total"] == "2000000"
        if name == "logs":
            (wrong_line,) = by_tx[wrong["transactionHash"]]["transfers"]
            assert wrong_line["verdict"] == "wrong_token" and wrong_line["amount"] == "9000000"


async def test_live_receipt_from_the_node(anvil: Anvil, usdc: Token) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    paid = await usdc.transfer(payer, us, 1_500_000)
    await anvil.mine(4)
    env = {
        "X402_BASE_RPC_URL": anvil.url,
        "X402_BASE_CHAIN_ID": str(anvil.chain_id),
        "X402_BASE_USDC_ADDRESS": usdc.address,
        "X402_BASE_PAYMENT_ADDRESS": us,
    }
    report = explain_json("--chain", "base", paid["transactionHash"], **env)
    ((line,),) = [tx["transfers"] for tx in report["transactions"]]
    assert (line["verdict"], line["amount"], line["confirmations"]) == ("credit", "1500000", 5)
    assert "state" not in line  # no database configured: no ledger state claimed
    code, _, err = explain("--chain", "base", "0x" + "12" * 32, **env)
    assert code == 1 and "no receipt" in err
