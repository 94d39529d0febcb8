"""Run the LiteSVM-backed local Solana node (for `make devnet` and manual testing).

    python scripts/solana_node.py --port 8899 [--ws-port 8900] [--finality-depth 2]
                                  [--slot-ms 400] [--owner PUBKEY]

Prints the HTTP and websocket URLs, then one JSON line with the USDC-like mint
it created (6 decimals), the funded payer's token account, and the URLs.
Binds 127.0.0.1 only. Ctrl-C or SIGTERM stops it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solders.pubkey import Pubkey

from devkit.solana_node import Bank, SolanaNode


async def main(args: argparse.Namespace) -> None:
    node = SolanaNode(finality_depth=args.finality_depth, slot_interval=args.slot_ms / 1000)
    await node.start(args.port, args.ws_port)
    bank = Bank(node.chain)
    usdc = bank.create_mint(6)
    payer = bank.wallet(100)
    payer_ata = bank.mint_to(usdc, payer.pubkey(), 1_000_000 * 10**6)
    owner_ata = None
    if args.owner:
        owner_ata = str(bank.create_ata(Pubkey.from_string(args.owner), usdc))
    print(f"HTTP JSON-RPC: {node.url}", flush=True)
    print(f"Websocket:     {node.ws_url}", flush=True)
    print(
        json.dumps(
            {
                "rpc_url": node.url,
                "ws_url": node.ws_url,
                "usdc_mint": str(usdc),
                "payer_secret": list(bytes(payer)),
                "payer_pubkey": str(payer.pubkey()),
                "payer_token_account": str(payer_ata),
                "owner_token_account": owner_ata,
                "finality_depth": args.finality_depth,
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await node.close()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, default=8899, help="HTTP port (0: any free port)")
    p.add_argument("--ws-port", type=int, default=None, help="websocket port (default port+1)")
    p.add_argument("--finality-depth", type=int, default=2, help="finalized trails by N slots")
    p.add_argument("--slot-ms", type=int, default=400, help="an empty slot every N ms")
    p.add_argument("--owner", help="create this wallet's USDC associated token account")
    args = p.parse_args()
    if args.ws_port is None:
        args.ws_port = args.port + 1 if args.port else 0
    return args


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parse_args()))
