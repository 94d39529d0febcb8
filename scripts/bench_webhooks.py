"""Benchmark webhook delivery: `watcher run` on anvil, a receiver on loopback; prints JSON.

    .venv/bin/python scripts/bench_webhooks.py [--payments 10000] [--live 2000] [--live-rate 200]

Each phase has its own database, token and `watcher run` process (followers and the
delivery worker in one process, as deployed), against one anvil:

1. ``baseline``: N payments already on chain, no webhook endpoint: the credit rate
   (payments per second from the first credit to the last) of a backfill.
2. ``fast``: the same with an endpoint whose receiver answers at once: the credit rate
   beside delivery, deliveries per second (first to last arrival), and the time from
   each event's commit to its arrival (the commit is when this script's LISTEN on
   ``watcher_events`` hears the NOTIFY that ``emit_events`` sends at commit). A
   backfill commits thousands of credits at once: these latencies are a burst's.
3. ``slow``: the receiver answers after 200 ms: the credit rate (the target: at least
   0.9 of the baseline's: a slow receiver must not slow crediting); deliveries are
   watched for 10 s after the last credit.
4. ``live``: the daemon follows the head; payments arrive in a stream paced at
   ``--live-rate`` per second (20 per block): commit -> delivery p50/p99 in steady
   operation. Offered faster than the worker delivers, the figures would measure a
   queue draining instead (``--live-rate 0``: as fast as anvil takes them).

Targets (issue 14): p50 <= 50 ms and p99 <= 500 ms with a fast receiver, >= 500
deliveries/s, credit rate with a slow receiver >= 0.9x the baseline.
PostgreSQL: ``DATABASE_URL`` if set, else a private embedded server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.anvil import Anvil, Token, calldata, deploy_token, start_anvil
from devkit.pg import with_database
from devkit.webhook_receiver import Answer, Receiver
from watcher import db
from watcher.webhooks import signing

CONFIRMATIONS = 2
PER_TX = 500
LIVE_PER_TX = 20
SLOW_WATCH_SECONDS = 10.0  # how long the slow receiver's deliveries are watched


async def pay(node: Anvil, usdc: Token, to: str, n: int, per_tx: int, rate: float = 0.0) -> None:
    """``n`` payments to ``to``, ``per_tx`` per transaction; ``rate`` > 0 paces them to
    that many per second."""
    sent = 0
    start = time.monotonic()
    while sent < n:
        if rate > 0:
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        k = min(per_tx, n - sent)
        data = calldata(
            "batchTransfer(address[],uint256[])", [to] * k, [100_000 + sent + j for j in range(k)]
        )
        tx = await node.send(node.accounts[1], usdc.address, data, gas=60_000 + 12_000 * k)
        if (await node.receipt(tx, timeout=60))["status"] != "0x1":
            raise RuntimeError("batchTransfer failed")
        sent += k


class Commits:
    """NOTIFY arrival times: when each event's transaction committed (as seen here)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.newest: list[int] = []

    def heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.times.append(time.time())
        self.newest.append(int(payload))

    def of(self, event_id: int) -> float | None:
        # Notifications arrive in commit order; the first whose newest id covers the event.
        best = None
        for t, n in zip(self.times, self.newest, strict=True):
            if n >= event_id:
                best = t
                break
        return best


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


async def credited(conn: asyncpg.Connection) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM payments WHERE state = 'credited'")
    return n


async def until(pred: Any, limit: float, poll: float = 0.01) -> float:
    deadline = time.monotonic() + limit
    while not await pred():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(poll)
    return time.monotonic()


class Phase:
    """One database, one token, one `watcher run`."""

    def __init__(self, admin: asyncpg.Connection, admin_dsn: str, node: Anvil) -> None:
        self.admin, self.node = admin, node
        self.name = f"bench_wh_{uuid.uuid4().hex[:8]}"
        self.dsn = with_database(admin_dsn, self.name)
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Phase:
        await self.admin.execute(f'CREATE DATABASE "{self.name}"')
        self.conn = await asyncpg.connect(self.dsn)
        await db.migrate(self.conn)
        self.usdc = await deploy_token(self.node)
        await self.usdc.mint(self.node.accounts[1], 10**15)
        self.start_block = await self.node.block_number()
        self.us = self.node.accounts[7]
        return self

    async def endpoint(self, url: str) -> str:
        secret = signing.new_secret()
        await self.conn.execute(
            "INSERT INTO webhook_endpoints (url, event_types, secret) VALUES ($1, $2, $3)",
            url, ["payment.credited"], secret,
        )  # fmt: skip
        return secret

    async def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("X402_", "WATCHER_"))},
            "DATABASE_URL": self.dsn,
            "X402_BASE_RPC_URL": self.node.url,
            "X402_BASE_WS_URL": self.node.ws_url,
            "X402_BASE_PAYMENT_ADDRESS": self.us,
            "X402_BASE_USDC_ADDRESS": self.usdc.address,
            "X402_BASE_CHAIN_ID": str(self.node.chain_id),
            "X402_BASE_CONFIRMATIONS": str(CONFIRMATIONS),
            "X402_BASE_START_BLOCK": str(self.start_block),
            "WATCHER_METRICS_PORT": "0",
            "WATCHER_LOG_LEVEL": "warning",
            "WATCHER_DATA_DIR": tempfile.mkdtemp(prefix="bench-wh-"),
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "watcher", "run", "--no-api", env=env, cwd=ROOT
        )

    async def __aexit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 20)
        await self.conn.close()
        await self.admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def backfill(phase: Phase, n: int) -> dict[str, float]:
    """N payments on chain first, then the daemon: the credit rate of its backfill."""
    await pay(phase.node, phase.usdc, phase.us, n, PER_TX)
    await phase.node.mine(CONFIRMATIONS + 1)
    started = time.monotonic()
    await phase.start()

    async def some() -> bool:
        return await credited(phase.conn) > 0

    async def every() -> bool:
        return await credited(phase.conn) >= n

    first = await until(some, 120)
    last = await until(every, 600)
    # From process start (migrations, first RPC calls: the same in every phase) to the
    # last credit, and the spread of the credits themselves (0 when one step took all).
    return {
        "credit_wall_s": round(last - started, 2),
        "credit_rate_per_s": round(n / (last - started)),
        "credit_spread_s": round(last - first, 2),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (its own work, whatever the load)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latencies(receiver: Receiver, commits: Commits) -> list[float]:
    out = []
    for mid, hits in receiver.hits.items():
        at = commits.of(int(mid[4:]))
        if hits and at is not None:
            out.append((hits[0].at - at) * 1000)
    return out


def delivery_rate(receiver: Receiver) -> float:
    arrivals = sorted(h.at for hs in receiver.hits.values() for h in hs)
    if len(arrivals) < 2:
        return 0.0
    return round(len(arrivals) / (arrivals[-1] - arrivals[0]))


async def with_receiver(
    admin: asyncpg.Connection, dsn: str, node: Anvil, n: int, delay: float, drain: bool
) -> dict[str, Any]:
    async with Phase(admin, dsn, node) as phase:
        receiver = Receiver(secrets=[], behave=lambda _i, _n: Answer(200, delay=delay))
        receiver.secrets = [await phase.endpoint(receiver.url)]
        commits = Commits()
        await phase.conn.add_listener("watcher_events", commits.heard)
        async with receiver:
            out: dict[str, Any] = await backfill(phase, n)
            assert phase.proc is not None
            cpu_at_credit, wall_at_credit = cpu_seconds(phase.proc.pid), time.time()
            if drain:

                async def all_in() -> bool:
                    return len(receiver.ids()) >= n

                await until(all_in, 600, poll=0.05)
            else:
                await asyncio.sleep(SLOW_WATCH_SECONDS)
            lat = latencies(receiver, commits)
            delivered_after = sum(
                1 for hs in receiver.hits.values() for h in hs if h.at >= wall_at_credit
            )
            # The daemon's CPU per delivery once the credits were in: what bounds the rate
            # on an idle core (1000 / this = deliveries per second per core).
            cpu = cpu_seconds(phase.proc.pid) - cpu_at_credit
            out.update(
                daemon_cpu_ms_per_delivery_after_credit=round(
                    1000 * cpu / max(delivered_after, 1), 2
                ),
                delivered=len(receiver.ids()),
                unverified=len(receiver.unverified()),
                deliveries_per_s=delivery_rate(receiver),
                commit_to_delivery_p50_ms=pct(lat, 0.5),
                commit_to_delivery_p99_ms=pct(lat, 0.99),
            )
        return out


async def live(
    admin: asyncpg.Connection, dsn: str, node: Anvil, n: int, rate: float
) -> dict[str, Any]:
    async with Phase(admin, dsn, node) as phase:
        receiver = Receiver(secrets=[])
        receiver.secrets = [await phase.endpoint(receiver.url)]
        commits = Commits()
        await phase.conn.add_listener("watcher_events", commits.heard)
        async with receiver:
            await phase.start()
            await asyncio.sleep(3)  # started, caught up with an empty chain
            t = time.monotonic()
            await pay(node, phase.usdc, phase.us, n, LIVE_PER_TX, rate)
            offered = n / (time.monotonic() - t)
            for _ in range(CONFIRMATIONS + 1):
                await node.mine(1)
                await asyncio.sleep(0.05)

            async def all_in() -> bool:
                return len(receiver.ids()) >= n

            await until(all_in, 300, poll=0.05)
            lat = latencies(receiver, commits)
        return {
            "payments": n,
            "offered_per_s": round(offered),
            "delivered": len(receiver.ids()),
            "unverified": len(receiver.unverified()),
            "commit_to_delivery_p50_ms": pct(lat, 0.5),
            "commit_to_delivery_p99_ms": pct(lat, 0.99),
            "commit_to_delivery_max_ms": pct(lat, 1.0),
        }


async def bench(args: argparse.Namespace, admin_dsn: str) -> dict[str, Any]:
    admin = await asyncpg.connect(admin_dsn)
    node = await start_anvil("--gas-limit", "2000000000")
    try:
        async with Phase(admin, admin_dsn, node) as phase:
            base = await backfill(phase, args.payments)
        fast = await with_receiver(admin, admin_dsn, node, args.payments, 0.0, drain=True)
        slow = await with_receiver(admin, admin_dsn, node, args.payments, 0.2, drain=False)
        steady = await live(admin, admin_dsn, node, args.live, args.live_rate)
    finally:
        await node.close()
        await admin.close()
    ratio_fast = fast["credit_rate_per_s"] / base["credit_rate_per_s"]
    ratio_slow = slow["credit_rate_per_s"] / base["credit_rate_per_s"]
    return {
        "bench": "webhooks",
        "payments": args.payments,
        "baseline": base,
        "fast": fast,
        "slow_200ms": slow,
        "live": steady,
        "credit_rate_ratio_fast": round(ratio_fast, 2),
        "credit_rate_ratio_slow": round(ratio_slow, 2),
        "targets": {
            "p50_le_50ms_live": steady["commit_to_delivery_p50_ms"] <= 50,
            "p99_le_500ms_live": steady["commit_to_delivery_p99_ms"] <= 500,
            "deliveries_ge_500_per_s": fast["deliveries_per_s"] >= 500,
            "slow_credit_ratio_ge_0.9": ratio_slow >= 0.9,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=2_000)
    parser.add_argument("--live-rate", type=float, default=200.0, help="payments/s; 0: unpaced")
    args = parser.parse_args()
    if os.environ.get("DATABASE_URL"):
        print(json.dumps(asyncio.run(bench(args, os.environ["DATABASE_URL"]))))
        return
    data_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data_dir.chmod(0o755)  # pgserver drops root to its own user, which must reach the dir
    with db.EmbeddedPostgres(data_dir) as dsn:
        print(json.dumps(asyncio.run(bench(args, dsn))))


if __name__ == "__main__":
    main()
