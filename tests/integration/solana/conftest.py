"""Fixtures for the Solana tests: a local LiteSVM node with a USDC-like mint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from devkit.solana_node import SolanaNode, World, usdc_world


@pytest.fixture
async def solana() -> AsyncIterator[SolanaNode]:
    node = SolanaNode(finality_depth=2)
    await node.start()
    try:
        yield node
    finally:
        await node.close()


@pytest.fixture
def world(solana: SolanaNode) -> World:
    """A USDC-like mint with 1,000,000 of it minted to alice, and a merchant owning nothing."""
    return usdc_world(solana, 1_000_000 * 10**6)
