"""`watcher explain --chain solana`: mainnet fixtures and transactions the node produced."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair

from devkit.solana_node import World, render
from tests import fixtures
from watcher.__main__ import main

USDC = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"


@pytest.fixture(autouse=True)
def _no_ledger(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Explain reads the ledger only where a test gives it DATABASE_URL (without it, the
    embedded one under WATCHER_DATA_DIR: here a directory with no database)."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("WATCHER_DATA_DIR", str(tmp_path / "no-ledger"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(["explain", "--chain", "solana", "--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else out


async def arun(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """``run`` from an async test (the CLI starts its own event loop)."""
    code = await asyncio.to_thread(main, ["explain", "--chain", "solana", "--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if code == 0 else out


def test_mainnet_fixtures(capsys: pytest.CaptureFixture[str]) -> None:
    path = fixtures.solana_fixture_path
    code, doc = run(
        capsys,
        "--from-file",
        str(path(fixtures.DURABLE_NONCE)),
        "--receiver",
        "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M",
        "--token",
        USDC,
    )
    assert code == 0 and doc["chain"] == "solana" and doc["credit_total"] == "3800000"
    (tx,) = doc["transactions"]
    assert tx["status"] == "success"
    assert tx["transfers"] == [
        {
            "log_index": 4,
            "token": USDC,
            "from": "3V9bd3EN5aNuhE4RiHGbZ1eZakJ1F9cDb8V4YLjCG8cg",
            "to": "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M",
            "amount": "3800000",
            "verdict": "credit",
        }
    ]
    code, doc = run(
        capsys,
        "--from-file",
        str(path(fixtures.ORCA_CPI)),
        "--receiver",
        "D7XYERWodEGaoN2X855T2qLvse28BSjfkvfCyW2EDBWy",
        "--token",
        USDC,
    )
    # +907 (not 210,190), which is under the default $0.10 minimum: recorded, not credited
    assert doc["credit_total"] == "0"
    mine = [t for t in doc["transactions"][0]["transfers"] if t["log_index"] == 6]
    assert [(t["amount"], t["verdict"]) for t in mine] == [("907", "below_minimum")]
    assert any(t["verdict"] == "wrong_token" for t in doc["transactions"][0]["transfers"])
    code, doc = run(
        capsys,
        "--from-file",
        str(path(fixtures.ORCA_FAILED)),
        "--receiver",
        "D7XYERWodEGaoN2X855T2qLvse28BSjfkvfCyW2EDBWy",
        "--token",
        USDC,
    )
    assert doc["credit_total"] == "0" and doc["transactions"][0]["status"] == "failed"
    assert {t["verdict"] for t in doc["transactions"][0]["transfers"]} <= {"failed_tx"}


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["explain", "--chain", "solana", "--from-file", "x.json"]) == 2  # no receiver
    bad = tmp_path / "bad.json"
    bad.write_text('{"jsonrpc": "2.0", "result": null, "id": 1}')
    assert (
        main(
            [
                "explain",
                "--chain",
                "solana",
                "--from-file",
                str(bad),
                "--receiver",
                str(Keypair().pubkey()),
            ]
        )
        == 2
    )
    assert "not a getTransaction result" in capsys.readouterr().err


async def test_explain_node_transactions(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bank, merchant, chain = world.bank, world.merchant.pubkey(), world.node.chain
    usdc = str(world.usdc)
    fake = bank.create_mint(6)
    bank.mint_to(fake, world.alice.pubkey(), 10**9)
    sigs = {
        "credit": bank.pay(world.alice, world.usdc, merchant, 2_500_000, create_ata=True),
        "small": bank.pay(world.alice, world.usdc, merchant, 10),
        "zero": bank.pay(world.alice, world.usdc, merchant, 0),
        "fake": bank.pay(world.alice, fake, merchant, 1_000_000, create_ata=True),
        "other": bank.pay(world.alice, world.usdc, Keypair().pubkey(), 1_000_000, create_ata=True),
        "failed": bank.failing_payment(world.alice, world.usdc, merchant),
    }
    answers = []
    for i, sig in enumerate(sigs.values()):
        answer = render.transaction(chain.by_sig[sig], "jsonParsed", 0)
        if i % 2:  # half enveloped, half bare
            answer = {"jsonrpc": "2.0", "result": answer, "id": 1}
        answers.append(answer)
        # one answer per file works too
        (tmp_path / f"{i}.json").write_text(json.dumps(answer))
    (tmp_path / "all.json").write_text(json.dumps(answers))
    code, doc = await arun(
        capsys,
        "--from-file",
        str(tmp_path / "all.json"),
        "--receiver",
        str(merchant),
        "--token",
        usdc,
    )
    assert code == 0
    by = {t["tx"]: t for t in doc["transactions"]}
    first = {name: by[sig]["transfers"] for name, sig in sigs.items()}
    assert [t["verdict"] for t in first["credit"]] == ["credit"]
    assert first["credit"][0]["from"] == str(world.alice.pubkey())
    assert [t["verdict"] for t in first["small"]] == ["below_minimum"]
    assert [t["verdict"] for t in first["zero"]] == ["zero_value"]
    assert [t["verdict"] for t in first["fake"]] == ["wrong_token"]
    assert [t["verdict"] for t in first["other"]] == ["not_ours"]
    assert [t["verdict"] for t in first["failed"]] == ["failed_tx"]
    assert by[sigs["failed"]]["status"] == "failed"
    assert doc["credit_total"] == "2500000"
    # The human view: the verdict and the total first, amounts in USDC as on EVM.
    argv = ["explain", "--chain", "solana", "--from-file", str(tmp_path / "all.json")]
    assert await asyncio.to_thread(main, [*argv, "--receiver", str(merchant), "--token", usdc]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "credit total: 2.50 USDC (2500000 base units) from 1 payment to us; 4 to us not "
        "credited (1 below_minimum, 1 failed_tx, 1 wrong_token, 1 zero_value); "
        "1 transfer to others ignored",
        "solana: 6 transactions (1 failed), 6 token transfers; "
        "listed: the 5 transactions to us (--all lists every one)",
    ]
    verdicts = {ln.split("=> ")[1]: ln.split(": ", 1)[1] for ln in lines if "=> " in ln}
    assert verdicts["credit"].startswith("2.50 USDC ")
    assert verdicts["below_minimum"].startswith("0.00001 USDC ")
    assert verdicts["zero_value"].startswith("0.00 USDC ")
    assert verdicts["failed_tx"].startswith("1000000000000.00 USDC ")
    assert verdicts["wrong_token"].startswith(f"1000000 base units of token {fake} ")
    code, one = await arun(
        capsys,
        "--from-file",
        str(tmp_path / "1.json"),
        "--receiver",
        str(merchant),
        "--token",
        usdc,
    )
    assert [t["verdict"] for t in one["transactions"][0]["transfers"]] == ["below_minimum"]
    # the same through RPC, by signature
    env = {"X402_SOLANA_RPC_URL": world.node.url}
    code = await asyncio.to_thread(
        _main_with_env,
        env,
        [
            "explain",
            "--chain",
            "solana",
            "--json",
            sigs["credit"],
            "--receiver",
            str(merchant),
            "--token",
            usdc,
        ],
    )
    assert code == 0
    fetched = json.loads(capsys.readouterr().out)
    assert fetched["credit_total"] == "2500000"


def _main_with_env(env: dict[str, str], argv: list[str]) -> int:
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return main(argv)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def test_explain_shows_ledger_state_and_picks_the_signature(
    world: World, pool: Any, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.solana.test_follower import follower

    bank, merchant, chain = world.bank, world.merchant.pubkey(), world.node.chain
    paid = bank.pay(world.alice, world.usdc, merchant, 3_000_000, create_ata=True)
    other = bank.pay(world.alice, world.usdc, Keypair().pubkey(), 5_000_000, create_ata=True)
    chain.advance(2)
    f = follower(world, pool)
    await f.sync_once()
    await f.rpc.aclose()
    answers = [render.transaction(chain.by_sig[s], "jsonParsed", 0) for s in (paid, other)]
    path = tmp_path / "both.json"
    path.write_text(json.dumps(answers))
    argv = [
        "explain",
        "--chain",
        "solana",
        "--json",
        paid,
        "--from-file",
        str(path),
        "--receiver",
        str(merchant),
        "--token",
        str(world.usdc),
    ]
    code = await asyncio.to_thread(_main_with_env, {"DATABASE_URL": database_url}, argv)
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and [t["tx"] for t in doc["transactions"]] == [paid]
    (t,) = doc["transactions"][0]["transfers"]
    assert (t["verdict"], t["state"]) == ("credit", "credited")
    argv[4] = other
    code = await asyncio.to_thread(_main_with_env, {"DATABASE_URL": database_url}, argv)
    doc = json.loads(capsys.readouterr().out)
    (t,) = doc["transactions"][0]["transfers"]
    assert (t["verdict"], t["state"]) == ("not_ours", "not_recorded")
    argv[4] = "1" * 64
    assert await asyncio.to_thread(_main_with_env, {}, argv) == 1
