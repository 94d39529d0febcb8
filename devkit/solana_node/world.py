"""A node with a USDC-like mint, a funded payer and a receiving owner: what most Solana
scenarios (tests, benches) start from."""

from __future__ import annotations

from dataclasses import dataclass

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from devkit.solana_node.helpers import Bank
from devkit.solana_node.server import SolanaNode


@dataclass
class World:
    """A node with a USDC-like mint, a funded payer (alice) and our receiving owner."""

    node: SolanaNode
    bank: Bank
    usdc: Pubkey
    alice: Keypair
    merchant: Keypair


def usdc_world(node: SolanaNode, alice_units: int = 1_000_000 * 10**6) -> World:
    """A 6-decimal mint on ``node``, ``alice_units`` of it minted to a fresh wallet (alice),
    and a fresh merchant key that owns nothing yet."""
    bank = Bank(node.chain)
    usdc = bank.create_mint(6)
    alice = bank.wallet()
    bank.mint_to(usdc, alice.pubkey(), alice_units)
    return World(node, bank, usdc, alice, Keypair())
