"""`watcher doctor` against the local Solana node: the websocket and the finalized head's age."""

from __future__ import annotations

from tests.integration.solana.conftest import World
from tests.solana_node import SolanaNode
from watcher.doctor import probes
from watcher.settings import SolanaChain


async def test_websocket_is_checked_with_a_subscription(solana: SolanaNode) -> None:
    # A Solana PubSub socket serves subscriptions only; a getVersion there gets no answer.
    (check,) = await probes.ws_endpoint("solana", solana.ws_url, None, 5)
    assert check.status == "ok", check
    assert check.value.startswith("websocket ok")


async def test_endpoint_reports_the_finalized_head_and_its_age(world: World) -> None:
    chain = SolanaChain(
        rpc_urls=(world.node.url,),
        ws_urls=(),
        usdc_mint=str(world.usdc),
        owner=str(world.merchant.pubkey()),
        commitment="finalized",
    )
    checks = await probes.solana_endpoint(chain, world.node.url, 5, None)
    head = next(c for c in checks if c.name.startswith("solana http"))
    assert "finalized slot" in head.value and "time unknown" not in head.value, head
