"""`watcher doctor` against the local Solana node: the websocket and the finalized head's age."""

from __future__ import annotations

from solders.keypair import Keypair

from devkit.solana_node import SolanaNode, World
from watcher.doctor import probes
from watcher.settings import SolanaChain


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
