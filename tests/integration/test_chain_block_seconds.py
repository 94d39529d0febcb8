"""``watcher_chain_block_seconds``: each followed network exports the registry's block time.

The HeadLagHigh and NoNewBlock alerts (deploy/prometheus/alerts.yml) turn blocks into
seconds with it, so a network without the gauge would never page.
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from devkit.anvil import Anvil, Token
from watcher import daemon, db, metrics, networks
from watcher.settings import Settings


def _block_seconds(chain: str) -> float | None:
    return REGISTRY.get_sample_value("watcher_chain_block_seconds", {"chain": chain})


async def _until_set(metric: str, chain: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while REGISTRY.get_sample_value(metric, {"chain": chain}) is None:
        assert time.monotonic() < deadline, f"{metric} never set for {chain}"
        await asyncio.sleep(0.05)


async def test_a_running_evm_follower_exports_its_registry_block_time(
    anvil: Anvil, usdc: Token, database_url: str
) -> None:
    """Polygon, a network added as a registry row, followed on anvil by the real follower."""
    metrics.CHAIN_BLOCK_SECONDS.clear()
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        watcher_metrics_port=0,
        x402_polygon_rpc_url=anvil.url,
        x402_polygon_payment_address=anvil.accounts[7],
        x402_polygon_usdc_address=usdc.address,
        x402_polygon_chain_id=anvil.chain_id,
        x402_polygon_confirmations=2,
        x402_polygon_start_block=0,
    )
    seen: dict[str, float | None] = {}

    def build(s: Settings, p: db.Pool) -> list[daemon.Follower]:
        built = daemon.build_followers(s, p)
        assert [f.chain for f in built] == ["polygon"]
        real = built[0]

        async def observed(stop: asyncio.Event) -> None:
            task = asyncio.create_task(real.run(stop))
            # The follower made its first step: it runs, with the gauge set before it started.
            await _until_set("watcher_chain_cursor_block", "polygon")
            seen["running"] = _block_seconds("polygon")
            stop.set()
            await task

        return [daemon.Follower(real.chain, observed)]

    assert _block_seconds("polygon") is None
    code = await asyncio.wait_for(daemon.run(settings, with_api=False, followers=build), 60)
    assert code == 0
    assert seen["running"] == networks.get("polygon").block_seconds == 2


async def test_every_registry_network_gets_its_own_block_time(database_url: str) -> None:
    metrics.CHAIN_BLOCK_SECONDS.clear()
    seen: dict[str, float | None] = {}

    def follow(name: str) -> daemon.Follower:
        async def run(stop: asyncio.Event) -> None:
            seen[name] = _block_seconds(name)
            if len(seen) == len(networks.NAMES):
                stop.set()
            await stop.wait()

        return daemon.Follower(name, run)

    settings = Settings(_env_file=None, database_url=database_url, watcher_metrics_port=0)
    code = await asyncio.wait_for(
        daemon.run(
            settings, with_api=False, followers=lambda s, p: [follow(n) for n in networks.NAMES]
        ),
        60,
    )
    assert code == 0
    assert seen == {row.name: row.block_seconds for row in networks.NETWORKS.values()}
    assert seen["solana"] == 0.4 and seen["ethereum"] == 12 and seen["arbitrum"] == 0.25
