"""Leader failover time: how long a chain goes unfollowed when the leader's session dies.

Two leader loops compete for one chain's lock on a private embedded PostgreSQL;
the leader's lock session is killed with pg_terminate_backend (what a crashed
host or kill -9 looks like to the server) and we time until the other side's
follower runs. Prints one JSON line: median and max over N rounds, in seconds.

    .venv/bin/python scripts/bench_failover.py [rounds]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time

import asyncpg

from watcher import db, leader


async def _round(dsn: str, poll: float) -> float:
    started = asyncio.Event()
    stop = asyncio.Event()

    async def follower(s: asyncio.Event) -> None:
        started.set()
        await s.wait()

    tasks = [
        asyncio.create_task(leader.lead("base", follower, dsn, stop, poll=poll)) for _ in range(2)
    ]
    await asyncio.wait_for(started.wait(), 30)
    started.clear()
    admin = await asyncpg.connect(dsn)
    try:
        row = await admin.fetchrow(db.q("leader_lock_holder"), leader.lock_key("base"))
        killed = time.monotonic()
        await admin.fetchval("SELECT pg_terminate_backend($1)", row["pid"])
    finally:
        await admin.close()
    # Either side may win the lock back: what counts is a follower running again.
    await asyncio.wait_for(started.wait(), 30)
    took = time.monotonic() - killed
    stop.set()
    await asyncio.gather(*tasks)
    return took


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        embedded = db.EmbeddedPostgres(tmp)
        dsn = await asyncio.to_thread(embedded.start)
        try:
            times = [await _round(dsn, leader.POLL_SECONDS) for _ in range(rounds)]
        finally:
            await asyncio.to_thread(embedded.stop)
    print(
        json.dumps(
            {
                "bench": "leader_failover",
                "rounds": rounds,
                "poll_seconds": leader.POLL_SECONDS,
                "median_seconds": round(statistics.median(times), 3),
                "max_seconds": round(max(times), 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
