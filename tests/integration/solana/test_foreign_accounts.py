"""Token accounts someone else opens in our name, and accounts handed to us (issue 11, 10-11).

Anyone can open a USDC token account owned by our wallet; the follower must not
pay a round trip per such account per pass, nor credit what lands in them. An
account handed to us with SetAuthority brings its past with it: only what
arrived after the handover is ours.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devkit.solana_node import World
from tests.integration.solana.test_explain import _main_with_env
from tests.integration.solana.test_follower import MIN, rows, settings_for
from watcher import db
from watcher.chains import solana
from watcher.doctor import solana_accounts

ATTACKER_ACCOUNTS = 200


def make(world: World, pool: db.Pool, **kw: Any) -> solana.SolanaFollower:
    """A follower that re-reads its watched set every pass (the refresh is paid every pass)."""
    settings = settings_for(world, **kw)
    return solana.make_follower(settings, pool, "solana", poll_interval=0.05, accounts_refresh=0)


async def idle_pass(world: World, f: solana.SolanaFollower) -> dict[str, int]:
    """The JSON-RPC calls of one pass with nothing new, by method (counted at the node)."""
    calls = world.node.faults.calls
    calls.clear()
    await f.sync_once()
    return dict(calls)


async def test_accounts_opened_in_our_name_cost_nothing_and_credit_nothing(
    world: World, pool: db.Pool, database_url: str
) -> None:
    bank, merchant, chain, usdc = world.bank, world.merchant.pubkey(), world.node.chain, world.usdc
    bank.create_ata(merchant, usdc)
    bank.pay(world.alice, usdc, merchant, 1_000_000)
    chain.advance(2)
    f = make(world, pool)
    await f.sync_once()
    before = await idle_pass(world, f)
    # The attacker opens 200 USDC accounts owned by our wallet and pays into a few.
    foreign = bank.token_accounts(merchant, usdc, ATTACKER_ACCOUNTS)
    bait = [
        bank.pay(world.alice, usdc, merchant, 2_000_000, to_token_account=a) for a in foreign[:5]
    ]
    real = bank.pay(world.alice, usdc, merchant, 3_000_000)
    chain.advance(2)
    await f.sync_once()
    after = await idle_pass(world, f)
    assert after == before, (before, after)
    assert before["getSignaturesForAddress"] == 1  # the one watched account: our ATA
    assert "getTokenAccountsByOwner" not in after
    got = {r["tx_hash"]: r["state"] for r in await rows(pool)}
    assert got[real] == "credited"
    assert not set(bait) & set(got)  # a payment into an ignored account is not credited
    assert sorted(f.accounts) == [str(bank.ata(merchant, usdc))]
    await f.rpc.aclose()
    # The doctor names every account it ignores.
    settings = settings_for(world, database_url=database_url)
    checks = {c.name: c for c in await solana_accounts.token_account_rows(settings, "solana", 5)}
    ignored = checks["solana ignored token accounts"]
    assert ignored.status == "warn" and f"{ATTACKER_ACCOUNTS} USDC token accounts" in ignored.value
    assert "X402_SOLANA_TOKEN_ACCOUNTS" in ignored.fix
    assert all(str(a) in ignored.value for a in foreign[:5])  # those holding USDC come first


async def test_listed_and_credited_accounts_keep_being_followed(
    world: World, pool: db.Pool, database_url: str
) -> None:
    bank, merchant, chain, usdc = world.bank, world.merchant.pubkey(), world.node.chain, world.usdc
    extra = bank.token_account(merchant, usdc)
    first = bank.pay(world.alice, usdc, merchant, 1_500_000, to_token_account=extra)
    chain.advance(2)
    listed = make(world, pool, x402_solana_token_accounts=str(extra))
    await listed.sync_once()
    await listed.rpc.aclose()
    # The operator drops the listing: the account has credited history, so it stays followed.
    f = make(world, pool)
    later = bank.pay(world.alice, usdc, merchant, 2_500_000, to_token_account=extra)
    chain.advance(2)
    await f.sync_once()
    assert str(extra) in f.accounts
    got = {r["tx_hash"]: r["state"] for r in await rows(pool)}
    assert got == {first: "credited", later: "credited"}
    await f.rpc.aclose()
    settings = settings_for(world, database_url=database_url)
    checks = {c.name: c for c in await solana_accounts.token_account_rows(settings, "solana", 5)}
    kept = checks["solana accounts with history"]
    assert kept.status == "warn" and str(extra) in kept.value
    assert checks["solana ignored token accounts"].status == "ok"


def handed_over_account(world: World, attacker: Keypair) -> tuple[Pubkey, list[str], str]:
    """An attacker's account that received USDC, was emptied, then given to us."""
    bank, usdc, merchant = world.bank, world.usdc, world.merchant.pubkey()
    bank.mint_to(usdc, attacker.pubkey(), 1)  # the attacker's own ATA, to withdraw into
    acct = bank.token_account(attacker.pubkey(), usdc)
    deposits = [
        bank.pay(world.alice, usdc, attacker.pubkey(), 4_000_000, to_token_account=acct),
        bank.pay(world.alice, usdc, attacker.pubkey(), 6_000_000, to_token_account=acct),
    ]
    out = bank.transfer_ix(
        attacker, usdc, bank.ata(attacker.pubkey(), usdc), 10_000_000, source=acct
    )
    bank.send([out], [attacker])
    handover = bank.hand_over(acct, attacker, merchant)
    return acct, deposits, handover


async def test_history_from_before_a_handover_is_not_ours(
    world: World, pool: db.Pool, database_url: str, capsys: Any
) -> None:
    bank, merchant, chain, usdc = world.bank, world.merchant.pubkey(), world.node.chain, world.usdc
    chain.old_balances = True  # answers without `owner` in their token balances
    attacker = bank.wallet()
    acct, deposits, handover = handed_over_account(world, attacker)
    after = bank.pay(world.alice, usdc, merchant, 2_000_000, to_token_account=acct)
    chain.advance(2)
    f = make(world, pool, x402_solana_token_accounts=str(acct))
    await f.sync_once()
    got = {r["tx_hash"]: r for r in await rows(pool)}
    assert set(got) == {*deposits, after}
    for sig in deposits:
        assert got[sig]["state"] == "not_ours", got[sig]
        assert str(attacker.pubkey()) in got[sig]["reason"]
    assert got[after]["state"] == "credited" and int(got[after]["amount"]) == 2_000_000
    # Later passes start from the cursor: the owner found in the history is remembered.
    again = bank.pay(world.alice, usdc, merchant, 3_000_000, to_token_account=acct)
    chain.advance(2)
    await f.sync_once()
    assert {r["tx_hash"]: r["state"] for r in await rows(pool)}[again] == "credited"
    await f.rpc.aclose()
    # explain never claims a deposit from before the handover, and says why it is not ours.
    argv = ["explain", "--chain", "solana", "--json", deposits[0]]
    env = {
        "DATABASE_URL": database_url,
        "X402_SOLANA_RPC_URL": world.node.url,
        "X402_SOLANA_PAYMENT_ADDRESS": str(merchant),
        "X402_SOLANA_USDC_MINT": str(usdc),
        "X402_MIN_PAYMENT_USD": "0.10",
    }
    assert await asyncio.to_thread(_main_with_env, env, argv) == 0
    doc = json.loads(capsys.readouterr().out)
    (t,) = [t for t in doc["transactions"][0]["transfers"] if t["amount"] == "4000000"]
    assert (t["verdict"], t["state"]) == ("owner_unknown", "not_ours")
    assert str(attacker.pubkey()) in t["reason"] and doc["credit_total"] == "0"
    argv[4] = handover
    assert await asyncio.to_thread(_main_with_env, env, argv) == 0
    assert json.loads(capsys.readouterr().out)["credit_total"] == "0"


async def test_modern_answers_show_the_owner_then(
    world: World, pool: db.Pool, capsys: Any, tmp_path: Path
) -> None:
    bank, merchant, chain, usdc = world.bank, world.merchant.pubkey(), world.node.chain, world.usdc
    attacker = bank.wallet()
    acct, deposits, _ = handed_over_account(world, attacker)
    after = bank.pay(world.alice, usdc, merchant, MIN, to_token_account=acct)
    chain.advance(2)
    f = make(world, pool, x402_solana_token_accounts=str(acct))
    await f.sync_once()
    got = {r["tx_hash"]: r for r in await rows(pool)}
    assert {s: got[s]["state"] for s in deposits} == {s: "not_ours" for s in deposits}
    assert got[after]["state"] == "credited"
    await f.rpc.aclose()
    # explain reads the owner then from the answer, not the owner today (us)
    env = {
        "WATCHER_DATA_DIR": str(tmp_path / "no-ledger"),  # and no ledger (none there)
        "X402_SOLANA_RPC_URL": world.node.url,
        "X402_SOLANA_PAYMENT_ADDRESS": str(merchant),
        "X402_SOLANA_USDC_MINT": str(usdc),
    }
    argv = ["explain", "--chain", "solana", "--json", deposits[0]]
    assert await asyncio.to_thread(_main_with_env, env, argv) == 0
    doc = json.loads(capsys.readouterr().out)
    (t,) = [t for t in doc["transactions"][0]["transfers"] if t["amount"] == "4000000"]
    assert (t["verdict"], t["to"]) == ("not_ours", str(attacker.pubkey()))
