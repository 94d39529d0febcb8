"""A LiteSVM-backed Solana JSON-RPC node for tests and development.

    async with SolanaNode(finality_depth=2) as node:
        bank = Bank(node.chain)
        usdc = bank.create_mint(6)
        ...
        node.chain.advance(3)     # time passes; finalized trails confirmed by 2 slots
        node.faults.fail_next = 2 # the next two HTTP requests answer 500

See ``chain`` (slots, commitment, dropped forks), ``rpc`` (methods),
``server`` (HTTP, websocket, faults) and ``helpers`` (transactions).
"""

from tests.solana_node.chain import Chain, SendError
from tests.solana_node.helpers import Bank
from tests.solana_node.server import Endpoint, Faults, SolanaNode

__all__ = ["Bank", "Chain", "Endpoint", "Faults", "SendError", "SolanaNode"]
