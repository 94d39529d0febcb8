"""`watcher doctor` against the local Solana node: the websocket and the finalized head's age."""

from __future__ import annotations

from pathlib import Path

from solders.keypair import Keypair

from devkit.solana_node import SolanaNode, World
from watcher import doctor
from watcher.doctor import probes, refunds_solana
from watcher.settings import Settings, SolanaChain


def solana_chain(world: World) -> SolanaChain:
    return SolanaChain(
        name="solana",
        rpc_urls=(world.node.url,),
        ws_urls=(),
        usdc_mint=str(world.usdc),
        owner=str(world.merchant.pubkey()),
        commitment="finalized",
    )


async def test_websocket_is_checked_with_a_subscription(solana: SolanaNode) -> None:
    # A Solana PubSub socket serves subscriptions only; a getVersion there gets no answer.
    (check,) = await probes.ws_endpoint("solana", solana.ws_url, None, 5)
    assert check.status == "ok", check
    assert check.value.startswith("websocket ok")


async def test_endpoint_reports_the_finalized_head_and_its_age(world: World) -> None:
    chain = solana_chain(world)
    checks = await probes.solana_endpoint(chain, world.node.url, 5, None)
    head = next(c for c in checks if c.name.startswith("solana http"))
    assert "finalized slot" in head.value and "time unknown" not in head.value, head


async def test_x402_fee_payer_balance_is_judged(world: World) -> None:
    chain = solana_chain(world)
    rich, empty = world.bank.wallet(1), Keypair()
    (ok,) = await probes.solana_fee_payer(chain, str(rich.pubkey()), 5, None)
    assert ok.status == "ok" and "1.000000 SOL" in ok.value, ok
    (dry,) = await probes.solana_fee_payer(chain, str(empty.pubkey()), 5, None)
    assert dry.status == "fail" and str(empty.pubkey()) in dry.fix, dry
    assert "fee_payer_unfunded" in dry.fix


async def test_the_refund_wallet_needs_sol_and_usdc(world: World) -> None:
    chain = solana_chain(world)
    rich = world.bank.wallet(1)
    world.bank.mint_to(world.usdc, rich.pubkey(), 25_000_000)
    sol, usdc = await refunds_solana.wallet_rows(chain, str(rich.pubkey()), 5, None)
    assert (sol.status, usdc.status) == ("ok", "ok"), (sol, usdc)
    assert "1.000000 SOL" in sol.value and "$25.00 USDC" in usdc.value
    empty = Keypair()
    sol, usdc = await refunds_solana.wallet_rows(chain, str(empty.pubkey()), 5, None)
    assert sol.status == "fail" and str(empty.pubkey()) in sol.fix, sol
    assert "cannot send refunds" in sol.fix
    assert usdc.status == "warn" and "before refunding" in usdc.fix, usdc
    (outside, _) = await refunds_solana.wallet_rows(
        chain, str(empty.pubkey()), 5, None, keyed=False
    )
    assert outside.status == "warn", outside  # an outside signer pays when it signs
    poor = world.bank.wallet(0)
    world.bank.chain.airdrop(poor.pubkey(), refunds_solana.FLOOR + 1)
    (sol, _) = await refunds_solana.wallet_rows(chain, str(poor.pubkey()), 5, None)
    assert sol.status == "warn" and "rent of a new token account" in sol.fix, sol


async def test_doctor_reports_the_refund_wallet_when_one_is_named(
    world: World, database_url: str, tmp_path: Path
) -> None:
    signer = world.bank.wallet(1)  # exported refunds: only the address is configured
    base = {
        "x402_solana_rpc_url": world.node.url,
        "x402_solana_payment_address": str(world.merchant.pubkey()),
        "x402_solana_usdc_mint": str(world.usdc),
        "database_url": database_url,
        "watcher_data_dir": tmp_path,
    }
    rows = await doctor.examine(Settings(_env_file=None, **base), seconds=5.0)
    assert not [r for r in rows if r.group == "refunds"]
    named = Settings(_env_file=None, x402_refund_solana_address=str(signer.pubkey()), **base)
    rows = await doctor.examine(named, seconds=5.0)
    found = {r.name: r for r in rows if r.group == "refunds"}
    assert found["solana refund SOL"].status == "ok"
    usdc = found["solana refund USDC"]
    assert usdc.status == "warn" and str(signer.pubkey()) in usdc.fix
