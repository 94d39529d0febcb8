#!/usr/bin/env python3
"""Benchmark the API under uvicorn on loopback; prints one JSON line.

* paid vs bare: requests/s and p50/p99 latency of ``/x402/example/paid`` (valid
  tokens, one metering UPDATE per call) against ``/x402/example/free`` on the
  same server in the same run (target: paid >= 0.6x bare);
* claims: p50/p99 of ``POST /x402/generate-token`` with an EIP-191 signature
  and with an invoice secret (target p99 <= 10 ms).

The server is ``watcher api`` in a child process (the deployment path); the
load comes from keep-alive HTTP/1.1 connections written by hand
(``devkit/httpload.py``) so the client costs little CPU. PostgreSQL: ``DATABASE_URL``
(a scratch database is created and dropped) or the embedded server in a temporary
directory.

    .venv/bin/python scripts/bench_api.py [--rounds 7] [--seconds 1] [--concurrency 32]
                                          [--claims 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from eth_account import Account
from eth_account.messages import encode_defunct

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import claims
from devkit.httpload import Conn, load, pct, summary, wait_ready
from watcher import db, keys, ledger, networks

RECEIVER = "0x" + "ab" * 20
USDC = networks.get("base").usdc.lower()


async def paid_vs_bare(port: int, tokens: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Alternate one-second rounds of bare and paid load: the machine is shared, so load
    from elsewhere hits both sides alike; the ratio reported is the median of the rounds."""
    out: dict[str, Any] = {}
    ratios = []
    runs: dict[str, tuple[list[float], dict[int, int], list[float]]] = {
        name: ([], {}, []) for name in ("bare", "paid")
    }
    for _ in range(args.rounds):
        for name, path, toks in (
            ("bare", "/x402/example/free", []),
            ("paid", "/x402/example/paid", [{"x-payment-token": t} for t in tokens]),
        ):
            lat, st, rates = runs[name]
            rates.append(await load(port, path, toks, args.seconds, args.concurrency, lat, st))
        ratios.append(runs["paid"][2][-1] / runs["bare"][2][-1])
    for name, (lat, st, rates) in runs.items():
        out[name] = summary(lat, st, rates)
    out["paid_over_bare"] = round(statistics.median(ratios), 3)
    out["paid_over_bare_rounds"] = [round(r, 3) for r in ratios]
    return out


async def seed(dsn: str, tokens: int, signed: int, invoices: int) -> dict[str, Any]:
    """Tokens with plenty of calls, credited payments to claim by signature or by invoice."""
    from devkit.api_support import make_settings

    settings = make_settings()
    pool = await db.create_pool(dsn, min_size=1, max_size=4)
    out: dict[str, Any] = {"tokens": [], "signed": [], "invoices": []}
    try:
        for i in range(tokens + signed):
            key = Account.create()
            tx = "0x" + secrets.token_hex(32)
            t = ledger.Transfer(
                chain="base",
                tx_hash=tx,
                log_index=0,
                block_number=1 + i,
                block_hash="0x" + secrets.token_hex(32),
                token=USDC,
                to_address=RECEIVER,
                amount=1_000_000_000,
                from_address=key.address.lower(),
            )
            async with pool.acquire() as conn, conn.transaction():
                (row,) = await ledger.record(conn, [t])
                await ledger.credit(conn, [row["id"]])
            if i < tokens:
                issued = await claims.issue_token(pool, settings, row["id"])
                out["tokens"].append(issued["token"])
            else:
                message = encode_defunct(text=claims.claim_message("base", tx))
                sig = "0x" + bytes(Account.sign_message(message, key.key).signature).hex()
                out["signed"].append({"chain": "base", "tx_hash": tx, "signature": sig})
        for i in range(invoices):
            secret = secrets.token_urlsafe(32)
            row = await pool.fetchrow(
                db.q("api_insert_evm_invoice"),
                "base",
                RECEIVER,
                USDC,
                1_000_000,
                10,
                keys.sha256(secret),
                ledger.INVOICE_GRACE,
                9_999,
                ledger.INVOICE_AMOUNT_HOLD,
            )
            t = ledger.Transfer(
                chain="base",
                tx_hash="0x" + secrets.token_hex(32),
                log_index=0,
                block_number=10_000 + i,
                block_hash="0x" + secrets.token_hex(32),
                token=USDC,
                to_address=RECEIVER,
                amount=int(row["amount"]),
                from_address="0x" + secrets.token_hex(20),
            )
            async with pool.acquire() as conn, conn.transaction():
                (pay,) = await ledger.record(conn, [t])
                await ledger.credit(conn, [pay["id"]])
            out["invoices"].append({"invoice_id": str(row["id"]), "claim_secret": secret})
    finally:
        await pool.close()
    return out


async def claim_latency(port: int, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Sequential claims, each from its own loopback address (the limit is 10/min per client)."""
    latencies, statuses = [], {}
    for i, body in enumerate(bodies):
        conn = await Conn.open(port, local_host=f"127.0.{1 + i // 250}.{1 + i % 250}")
        try:
            data = json.dumps(body).encode()
            status, took, _ = await conn.request(
                "POST", "/x402/generate-token", {"content-type": "application/json"}, data
            )
        finally:
            conn.close()
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(took)
    return {
        "n": len(latencies),
        "p50_ms": round(pct(latencies, 0.5), 3),
        "p99_ms": round(pct(latencies, 0.99), 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def bench(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    seeded = await seed(dsn, args.concurrency, args.claims, args.claims)
    from devkit.anvil import free_port

    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "WATCHER_API_PORT": str(port),
        "WATCHER_LOG_LEVEL": "warning",
        "X402_BASE_PAYMENT_ADDRESS": RECEIVER,
        "WATCHER_DATA_DIR": tempfile.mkdtemp(prefix="bench-api-"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "api",
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_ready(port, proc)
        await load(port, "/x402/example/free", [], 1.0, args.concurrency)  # warm-up
        paid = [{"x-payment-token": t} for t in seeded["tokens"]]
        await load(port, "/x402/example/paid", paid, 1.0, args.concurrency)
        compared = await paid_vs_bare(port, seeded["tokens"], args)
        signed = await claim_latency(port, seeded["signed"])
        invoice = await claim_latency(port, seeded["invoices"])
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
    return {
        "bench": "api",
        "concurrency": args.concurrency,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        **compared,
        "claim_signature": signed,
        "claim_invoice": invoice,
        "targets": {"paid_over_bare": 0.6, "claim_p99_ms": 10},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    admin = os.environ.get("DATABASE_URL")
    if admin:
        name = f"bench_api_{uuid.uuid4().hex[:8]}"
        dsn = urlunsplit(urlsplit(admin)._replace(path="/" + name))

        async def go() -> dict[str, Any]:
            c = await asyncpg.connect(admin)
            await c.execute(f'CREATE DATABASE "{name}"')
            await c.close()
            try:
                return await bench(dsn, args)
            finally:
                c = await asyncpg.connect(admin)
                await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await c.close()

        result = asyncio.run(go())
    else:
        with tempfile.TemporaryDirectory() as tmp, db.EmbeddedPostgres(Path(tmp)) as dsn:
            result = asyncio.run(bench(dsn, args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
