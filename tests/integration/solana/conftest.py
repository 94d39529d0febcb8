"""Fixtures for the Solana tests: a local LiteSVM node with a USDC-like mint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from tests.solana_node import Bank, SolanaNode


@pytest.fixture
async def solana() -> AsyncIterator[SolanaNode]:
    node = SolanaNode(finality_depth=2)
    await node.start()
    try:
        yield node
    finally:
        await node.close()


@dataclass
class World:
    """A node with a USDC-like mint, a funded payer (alice) and our receiving owner."""

    node: SolanaNode
    bank: Bank
    usdc: Pubkey
    alice: Keypair
    merchant: Keypair


@pytest.fixture
def world(solana: SolanaNode) -> World:
    bank = Bank(solana.chain)
    usdc = bank.create_mint(6)
    alice = bank.wallet()
    bank.mint_to(usdc, alice.pubkey(), 1_000_000 * 10**6)
    merchant = Keypair()
    return World(solana, bank, usdc, alice, merchant)
