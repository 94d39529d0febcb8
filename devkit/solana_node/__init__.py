"""A LiteSVM-backed Solana JSON-RPC node for tests and development (scripts/solana_node.py).

    async with SolanaNode(finality_depth=2) as node:
        bank = Bank(node.chain)
        usdc = bank.create_mint(6)
        ...
        node.chain.advance(3)     # time passes; finalized trails confirmed by 2 slots
        node.faults.fail_next = 2 # the next two HTTP requests answer 500

See ``chain`` (slots, commitment, dropped forks), ``rpc`` (methods),
``server`` (HTTP, websocket, faults), ``helpers`` (transactions) and ``world`` (a
node with a USDC-like mint and a funded payer).
"""

from devkit.solana_node.chain import Chain, SendError
from devkit.solana_node.helpers import Bank
from devkit.solana_node.server import Endpoint, Faults, SolanaNode
from devkit.solana_node.world import World, usdc_world

__all__ = ["Bank", "Chain", "Endpoint", "Faults", "SendError", "SolanaNode", "World", "usdc_world"]
