"""`watcher explain` as an operator runs it: recorded mainnet answers, and files made on anvil."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from devkit.anvil import Anvil, Token, deploy_token
from devkit.evmkit import drain, evm_chain, follower
from devkit.pg import SessionPostgres
from tests import fixtures
from watcher import db

ROOT = Path(__file__).resolve().parents[2]
MAINNET = ROOT / "tests" / "fixtures" / "mainnet" / "ethereum"
BLOCK_18M = MAINNET / "erigon_eth_getBlockReceipts_block_18000000.json"
LEGACY = MAINNET / "ethereumetl_eth_getFilterLogs_block_483920_legacy_format.json"
USDC_MAINNET = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
POISON_TX = "0x6742cd57e6aefce4b96887bb3090371ac49414c6b45a21e43d9e41e0ea9ed5ab"
LEGACY_TOKEN = "0xf4eced2f682ce333f96f2d8966c613ded8fc95dd"
# Where no ledger is: without it, explain would read the machine's own embedded database.
ETH_US = "0x91a559d248a216d1dd17c4d39f51bda9bd1de7e2"  # paid 1800 USDC in block 18,000,000
NO_LEDGER = Path(tempfile.gettempdir()) / f"explain-no-ledger-{uuid.uuid4().hex}"


def explain(*args: str, **env: str) -> tuple[int, str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
    }
    clean["WATCHER_DATA_DIR"] = str(NO_LEDGER)
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


def test_a_block_file_leads_with_the_verdict_and_the_total() -> None:
    us, poisoned = ETH_US, "0xacf44ceb7cacd31acfb04e45c548f121c1e8e20a"  # ours in this test
    args = ["--chain", "ethereum", "--from-file", str(BLOCK_18M), "--receiver", us]
    args += ["--receiver", poisoned]
    report = explain_json(*args)
    moved = sum(len(tx["transfers"]) for tx in report["transactions"])
    code, out, _ = explain(*args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        "credit total: 1800.00 USDC (1800000000 base units) from 1 payment to us; "
        f"1 to us not credited (1 zero_value); {moved - 2} transfers to others ignored"
    )
    assert lines[1] == (
        f"ethereum: 94 transactions (2 failed), {moved} token transfers; "
        "listed: the 2 transactions to us (--all lists every one)"
    )
    # The two transactions to us, each with its transfer to us; the others are a count.
    assert lines[2:7] == [
        f"ethereum tx {POISON_TX}  status: success",
        "  log 8: 0.00 USDC 0xf6D6393AE36dd060cFC4D2311F6A290ac24E976A -> "
        "0xACf44cEB7Cacd31Acfb04E45C548F121C1e8e20a  => zero_value",
        "  (49 transfers to others: --all lists them)",
        "ethereum tx 0x513a4abc759c2d30fd7f5a7e5239e72fccc1b24491b1ed99fa9f24b96e36fc88"
        "  status: success",
        "  log 176: 1800.00 USDC 0x7B60E46EBA142B7E95E967C1E34CfB862385eE53 -> "
        "0x91A559D248a216d1dD17C4D39F51bdA9bd1DE7e2  => credit",
    ]
    assert len(lines) == 8 and lines[-1].startswith("note: no ledger at WATCHER_DATA_DIR=")
    code, every, _ = explain(*args, "--all")
    assert code == 0 and every.splitlines()[0] == lines[0]
    assert sum(1 for ln in every.splitlines() if " tx 0x" in ln) == 94
    assert sum(1 for ln in every.splitlines() if "=>" in ln) == moved


def test_both_families_show_usdc_by_the_one_money_rule() -> None:
    code, evm_out, _ = explain(
        "--chain", "ethereum", "--from-file", str(BLOCK_18M), POISON_TX,
        "--receiver", "0xacf44ceb7cacd31acfb04e45c548f121c1e8e20a",
    )  # fmt: skip
    assert code == 0
    evm_lines = evm_out.splitlines()
    assert evm_lines[0].startswith("credit total: 0.00 USDC (0 base units) from 0 payments to us;")
    assert any("0.00 USDC" in ln and "=> zero_value" in ln for ln in evm_lines)
    code, sol_out, _ = explain(
        "--chain", "solana",
        "--from-file", str(fixtures.solana_fixture_path(fixtures.DURABLE_NONCE)),
        "--receiver", "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M",
    )  # fmt: skip
    assert code == 0
    sol_lines = sol_out.splitlines()
    assert sol_lines[0] == (
        "credit total: 3.80 USDC (3800000 base units) from 1 payment to us; "
        "0 to us not credited; 0 transfers to others ignored"
    )
    assert "  account 4: 3.80 USDC 3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg -> " in sol_out
    code, small, _ = explain(
        "--chain", "solana",
        "--from-file", str(fixtures.solana_fixture_path(fixtures.ORCA_CPI)),
        "--receiver", "D7XYERWodEGaoN2X855T2qLvse28BSjfkvfCyW2EDBWy",
    )  # fmt: skip
    assert code == 0 and "0.000907 USDC" in small and "=> below_minimum" in small
    assert small.startswith(
        "credit total: 0.00 USDC (0 base units) from 0 payments to us; "
        "2 to us not credited (1 below_minimum, 1 wrong_token);"
    )


async def test_the_embedded_ledger_is_read_where_watcher_run_keeps_it(
    anvil: Anvil, usdc: Token, tmp_path: Path
) -> None:
    payer, us = anvil.accounts[1], anvil.accounts[7]
    paid = await usdc.transfer(payer, us, 1_250_000)
    await anvil.mine(3)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(paid))
    data = tmp_path / "data"
    data.mkdir()
    env = {
        "X402_BASE_USDC_ADDRESS": usdc.address,
        "X402_BASE_PAYMENT_ADDRESS": us,
        "WATCHER_DATA_DIR": str(data),
    }
    args = ("--chain", "base", "--from-file", str(path))
    # No database there yet: said so, and none created just to explain.
    code, out, _ = explain(*args, **env)
    assert code == 0 and f"note: no ledger at WATCHER_DATA_DIR={data} " in out
    assert not (data / "pgdata").exists()
    # The embedded server `watcher run` starts there, running: explain joins it.
    embedded = db.EmbeddedPostgres(data)
    dsn = await asyncio.to_thread(embedded.start)
    try:
        pool = await db.create_pool(dsn, max_size=2)
        try:
            async with pool.acquire() as conn:
                await db.migrate(conn)
            async with follower(evm_chain(anvil, usdc, [us], confirmations=3), pool) as f:
                await drain(f)
        finally:
            await pool.close()
        code, out, err = explain(*args, **env)
        assert code == 0, err
        assert out.splitlines()[:2] == [
            "credit total: 1.25 USDC (1250000 base units) from 1 payment to us; "
            "0 to us not credited; 0 transfers to others ignored",
            "ledger: 1 credited",
        ]
        assert "=> credit  [ledger: credited]  [4 confirmations]" in out
        assert (data / "pgdata" / "postmaster.pid").exists()  # still running: not ours to stop
        # and its log says so: joined and left running, not "started" and "stopped".
        assert "embedded_postgres_joined" in err and "embedded_postgres_left_running" in err
        assert "embedded_postgres_stopped" not in err
    finally:
        await asyncio.to_thread(embedded.stop)
    assert not (data / "pgdata" / "postmaster.pid").exists()
    # Stopped: explain starts it, reads the ledger, and stops it again.
    report = explain_json(*args, **env)
    ((line,),) = [tx["transfers"] for tx in report["transactions"]]
    assert (line["verdict"], line["state"]) == ("credit", "credited") and "notes" not in report
    assert not (data / "pgdata" / "postmaster.pid").exists()


async def test_a_database_without_the_ledger_is_named(
    postgres: SessionPostgres, tmp_path: Path
) -> None:
    path = tmp_path / "logs.json"
    path.write_text("[]")
    empty = await postgres.create_empty()
    try:
        report = explain_json(
            "--chain", "base", "--from-file", str(path), "--receiver", ETH_US, DATABASE_URL=empty
        )
    finally:
        await postgres.drop(empty)
    (note,) = report["notes"]
    assert note.startswith("the database lacks the ledger's tables (relation ")
    assert note.endswith("does not exist): run watcher migrate")
