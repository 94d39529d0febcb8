"""Benchmark the delivery worker alone: its CPU per delivery, whatever the machine's load.

    .venv/bin/python scripts/bench_webhook_worker.py [--events 3000] [--concurrency 32]
        [--profile tottime]

N events are written first (one endpoint, '*'), then one ``Worker`` in burst mode
delivers them to a bare HTTP/1.1 receiver in a child process (it parses the request
and answers 204; no verification, so its CPU is not ours). Prints JSON: deliveries per
second (wall, on this machine now) and the worker process's CPU milliseconds per
delivery (the figure the load does not move: 1000 / it is the rate one idle core
gives). ``--profile`` prints cProfile's top functions by that key instead.
PostgreSQL: a private embedded server (devkit.pg).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit import pg
from devkit.anvil import free_port
from watcher import db, events
from watcher.webhooks import netguard, schedule, signing, worker

RECEIVER = r"""
import asyncio, sys
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            await r.readexactly(n)
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await w.drain()
    except Exception:
        w.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    server = pg.SessionPostgres(Path(tempfile.mkdtemp(prefix="bench-worker-")))
    await server.create_template()
    pool = await db.create_pool(await server.clone(), max_size=10)
    try:
        await pool.execute(
            "INSERT INTO webhook_endpoints (url, event_types, secret) VALUES ($1, '{*}', $2)",
            f"http://127.0.0.1:{port}/hook",
            signing.new_secret(),
        )
        async with pool.acquire() as conn, conn.transaction():
            for i in range(args.events):
                data = {"n": i, "pad": "x" * 400}  # about a payment's size
                await events.emit(conn, "webhook_endpoint.disabled", f"we_{i}", data)
        cfg = worker.Config(
            schedule=schedule.parse("1s"),
            policy=netguard.Policy(production=False),
            concurrency=args.concurrency,
        )
        profile = cProfile.Profile() if args.profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if profile:
            profile.enable()
        await worker.Worker(pool, cfg).run(asyncio.Event(), burst=True)
        if profile:
            profile.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        ok = await pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'"
        )
        if profile:
            pstats.Stats(profile).sort_stats(args.profile).print_stats(30)
        return {
            "bench": "webhook_worker",
            "events": args.events,
            "concurrency": args.concurrency,
            "delivered": ok,
            "deliveries_per_s": round(ok / wall),
            "worker_cpu_ms_per_delivery": round(cpu * 1000 / max(ok, 1), 2),
        }
    finally:
        receiver.kill()
        await pool.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", default="", help="a pstats sort key, e.g. tottime")
    print(json.dumps(asyncio.run(bench(parser.parse_args()))))


if __name__ == "__main__":
    main()
