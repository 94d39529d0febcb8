"""What token accounts opened in our name cost the Solana follower. Prints JSON lines.

    python scripts/bench_solana_accounts.py [--accounts 0,400] [--passes 10] [--delay-ms 0]

For each count: a fresh local node, our associated token account with one
payment, then an attacker opens that many USDC token accounts owned by our
wallet (a tenth of them funded). A follower catches up, then runs ``--passes``
passes with nothing new: the line gives the median and max pass time and the
JSON-RPC calls of one pass, by method, counted at the node. ``--delay-ms`` adds
that latency to every RPC answer (a remote endpoint). Then one real payment is
made and finalized, and the pass that credits it is timed.

Everything binds 127.0.0.1; the run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from solders.keypair import Keypair

from devkit.solana_node import Bank, SolanaNode
from watcher import db, logs
from watcher.chains import solana
from watcher.settings import load_settings

CREDITED = "SELECT count(*) FROM payments WHERE chain = 'solana' AND state = 'credited'"


async def one(n: int, args: argparse.Namespace, dsn: str) -> dict[str, object]:
    pool = await db.create_pool(dsn, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await db.migrate(conn)
        await conn.execute("TRUNCATE payments, cursors CASCADE")
    node = SolanaNode(finality_depth=2)
    await node.start()
    try:
        bank = Bank(node.chain)
        usdc = bank.create_mint(6)
        payer = bank.wallet(100)
        bank.mint_to(usdc, payer.pubkey(), 10**15)
        merchant = Keypair().pubkey()
        bank.create_ata(merchant, usdc)
        bank.pay(payer, usdc, merchant, 1_000_000)
        foreign = bank.token_accounts(merchant, usdc, n) if n else []
        for acct in foreign[: n // 10]:
            bank.pay(payer, usdc, merchant, 2_000_000, to_token_account=acct)
        node.chain.advance(2)
        settings = load_settings(
            x402_solana_rpc_url=node.url,
            x402_solana_payment_address=str(merchant),
            x402_solana_usdc_mint=str(usdc),
        )
        follower = solana.make_follower(settings, pool, "solana", poll_interval=0.5)
        await follower.sync_once()  # catch up on the history
        node.faults.delay = args.delay_ms / 1000
        times, calls = [], {}
        for _ in range(args.passes):
            node.faults.calls.clear()
            started = time.monotonic()
            await follower.sync_once()
            times.append(time.monotonic() - started)
            calls = dict(node.faults.calls)
        bank.pay(payer, usdc, merchant, 3_000_000)
        node.chain.advance(2)
        started = time.monotonic()
        await follower.sync_once()
        credit_pass = time.monotonic() - started
        async with pool.acquire() as conn:
            credited = await conn.fetchval(CREDITED)
        await follower.rpc.aclose()
    finally:
        await node.close()
        await pool.close()
    return {
        "bench": "solana_accounts",
        "attacker_accounts": n,
        "rpc_delay_ms": args.delay_ms,
        "idle_pass_median_s": round(statistics.median(times), 4),
        "idle_pass_max_s": round(max(times), 4),
        "rpc_calls_per_idle_pass": sum(calls.values()),
        "rpc_calls_by_method": calls,
        "pass_crediting_a_payment_s": round(credit_pass, 4),
        "credited_rows": credited,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--accounts", default="0,400", help="comma-separated counts")
    p.add_argument("--passes", type=int, default=10)
    p.add_argument("--delay-ms", type=float, default=0.0)
    args = p.parse_args()
    logs.configure("warning", "json")
    counts = [int(c) for c in args.accounts.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp, db.EmbeddedPostgres(Path(tmp)) as dsn:
        for n in counts:
            print(json.dumps(asyncio.run(one(n, args, dsn))), flush=True)


if __name__ == "__main__":
    main()
