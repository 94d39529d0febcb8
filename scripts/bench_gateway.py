#!/usr/bin/env python3
"""Benchmark the gateway on loopback; prints one JSON line, then a summary on stderr.

One run, one machine, one upstream, one load generator (``devkit/httpload.py``), four
ways to reach the same upstream route (requests/s, p50/p99 latency):

* ``direct``: the upstream itself;
* ``free``: a ``free = true`` gateway route (reverse-proxy mode);
* ``paid``: a gateway route priced at one call, paid with prepaid tokens (one
  metering UPDATE per call), then forwarded and signed;
* ``forward_auth``: nginx running docs/gateway.md's recipe as written (``auth_request``
  to ``/gateway/authorize`` with the token, then nginx proxies to the upstream itself);
* ``nginx``: the same nginx straight to the upstream (no auth), forward_auth's reference.

Targets (issue 13): paid >= 0.7x free, free >= 0.5x direct. The machine is shared, so
the sides alternate in short rounds (their order rotating) and each ratio is the median
of the rounds' ratios.

The upstream runs in a child process of its own (never in this process: it would
share the load generator's interpreter). ``--upstream devkit`` (default) is
``devkit/upstream.py``'s ``/unsigned/echo`` (a Starlette route answering JSON of what it
received, no signature check) under uvicorn, like a merchant's small Python API;
``--upstream minimal`` is a bare asyncio protocol answering the request head back,
which leaves nearly all the CPU to the gateway and so shows its overhead alone. The API
is ``watcher api`` in a child process (the deployment path) with
``WATCHER_GATEWAY_CONFIG`` naming a temporary TOML file. PostgreSQL: ``DATABASE_URL`` (a
scratch database is created and dropped) or the embedded server in a temporary
directory. Everything listens on 127.0.0.1.

    .venv/bin/python scripts/bench_gateway.py [--rounds 5] [--seconds 1] [--concurrency 32]
                                              [--upstream devkit|minimal] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import claims
from devkit import api_support, httpload, proxies
from devkit.anvil import free_port
from watcher import db

UPSTREAM_PATH = "/unsigned/echo"  # the one upstream route every side reaches
TOKEN_USD_UNITS = 1_000_000_000  # $1000 a token: 10,000 calls at $0.10, never runs dry
TARGETS = {"paid_over_free": 0.7, "free_over_direct": 0.5}


def gateway_toml(upstream_url: str) -> str:
    return f"""
[upstreams.bench]
url = "{upstream_url}"

[[routes]]
method = "GET"
path = "/v1/free"
upstream = "bench"
upstream_path = "{UPSTREAM_PATH}"
free = true

[[routes]]
method = "GET"
path = "/v1/paid"
upstream = "bench"
upstream_path = "{UPSTREAM_PATH}"
price_usd = "0.10"
"""


DOC = ROOT / "docs" / "gateway.md"
# nginx straight to the upstream, beside the recipe's server and shaped like it (no
# upstream keepalive): the reference the forward-auth side is compared with.
NGINX_PLAIN = """
server {
    listen 127.0.0.1:@PLAIN_PORT@;
    location / {
        proxy_pass @UPSTREAM@;
        proxy_http_version 1.1;
    }
}
"""


def nginx_recipe() -> str:
    """The forward-auth recipe for nginx, exactly as docs/gateway.md gives it."""
    found = re.search(r"<!-- recipe: nginx -->\n```nginx\n(.*?)\n```", DOC.read_text(), re.S)
    if found is None:
        raise RuntimeError(f"no nginx recipe in {DOC}")
    return found.group(1)


# ---- the upstream, in its own process ------------------------------------------------


class _Minimal(asyncio.Protocol):
    """Keep-alive HTTP/1.1 that answers every request with its own head (no body read
    beyond Content-Length, no parsing past the header lines)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buffer, self.skip = transport, b"", 0

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.skip:
                cut = min(self.skip, len(self.buffer))
                self.buffer, self.skip = self.buffer[cut:], self.skip - cut
            end = self.buffer.find(b"\r\n\r\n")
            if self.skip or end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    self.skip = int(line[15:])
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
                % (len(head), head)
            )


async def _serve_minimal() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Minimal, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


def serve_upstream(kind: str) -> int:
    """Child mode: serve the upstream, print its port, stop when stdin closes."""
    if kind == "minimal":
        asyncio.run(_serve_minimal())
        return 0
    from devkit import upstream

    with upstream.running() as up:
        print(up.port, flush=True)
        sys.stdin.read()
    return 0


@contextlib.asynccontextmanager
async def upstream_process(kind: str) -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve-upstream",
        kind,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        yield port
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# ---- the API -------------------------------------------------------------------------


async def issue_tokens(dsn: str, n: int) -> list[str]:
    """Tokens bought the way a payer does: a credited payment, then a claim."""
    settings = api_support.make_settings()
    pool = await db.create_pool(dsn, min_size=1, max_size=2)
    out = []
    try:
        for _ in range(n):
            payment_id, _ = await api_support.record_payment(pool, amount=TOKEN_USD_UNITS)
            out.append((await claims.issue_token(pool, settings, payment_id))["token"])
    finally:
        await pool.close()
    return out


@contextlib.asynccontextmanager
async def api_process(dsn: str, config: Path, work: Path) -> AsyncIterator[tuple[int, int]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "WATCHER_API_PORT": str(port),
        "WATCHER_LOG_LEVEL": "warning",
        "WATCHER_DATA_DIR": str(work / "data"),
        "WATCHER_GATEWAY_CONFIG": str(config),
        "WATCHER_GATEWAY_SECRET": secrets.token_urlsafe(32),  # signing is part of the cost
        "WATCHER_TRUSTED_PROXIES": "127.0.0.1",  # nginx's forward-auth subrequests
        "X402_BASE_PAYMENT_ADDRESS": api_support.BASE_RECEIVER,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "api",
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(work / "api.log").open("wb"),
    )
    try:
        await httpload.wait_ready(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


@contextlib.asynccontextmanager
async def profiled(pid: int, out: str | None) -> AsyncIterator[None]:
    """With ``--profile FILE``: py-spy samples the API process while the block runs
    (collapsed stacks, ``--format raw``; PY_SPY names the binary, default on PATH)."""
    if out is None:
        yield
        return
    spy = await asyncio.create_subprocess_exec(
        os.environ.get("PY_SPY", "py-spy"),
        *("record", "--pid", str(pid), "--format", "raw", "--output", out, "--nonblocking"),
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on interrupt
        await asyncio.wait_for(spy.wait(), 30)


# ---- the comparison ------------------------------------------------------------------


def received(body: bytes) -> dict[str, str]:
    """The headers the upstream says it received (devkit's JSON, or minimal's head)."""
    with contextlib.suppress(ValueError):
        return {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    lines = body.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}


async def check(side: str, port: int, path: str, headers: dict[str, str]) -> None:
    """One call first: a side that does not reach the upstream as intended is no figure."""
    conn = await httpload.Conn.open(port)
    try:
        status, _, body = await conn.request("GET", path, headers)
    finally:
        conn.close()
    rail = {"free": "free", "paid": "token", "forward_auth": "token"}.get(side)
    got = received(body) if status == 200 else {}
    if status != 200 or (rail and got.get("x-payment-rail") != rail):
        raise RuntimeError(f"{side}: {status} {body[:300]!r}")
    if rail and (not got.get("x-payment-signature") or "x-payment-token" in got):
        raise RuntimeError(f"{side}: unsigned, or the token reached the upstream: {got}")


async def compare(sides: dict[str, tuple[int, str, list[dict[str, str]]]], args: Any) -> dict:
    runs: dict[str, tuple[list[float], dict[int, int], list[float]]] = {
        name: ([], {}, []) for name in sides
    }
    names = list(sides)
    for name, (port, path, headers) in sides.items():
        await check(name, port, path, headers[0] if headers else {})
        await httpload.load(port, path, headers, min(args.seconds, 0.5), args.concurrency)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            port, path, headers = sides[name]
            lat, st, rates = runs[name]
            rates.append(
                await httpload.load(port, path, headers, args.seconds, args.concurrency, lat, st)
            )
    out: dict[str, Any] = {name: httpload.summary(*run) for name, run in runs.items()}

    def ratio(a: str, b: str) -> dict[str, Any]:
        each = [x / y for x, y in zip(runs[a][2], runs[b][2], strict=True)]
        return {"median": round(statistics.median(each), 3), "rounds": [round(x, 3) for x in each]}

    out["ratios"] = {
        "paid_over_free": ratio("paid", "free"),
        "free_over_direct": ratio("free", "direct"),
    }
    if "forward_auth" in runs:
        out["ratios"]["forward_auth_over_nginx"] = ratio("forward_auth", "nginx")
        out["ratios"]["forward_auth_over_paid"] = ratio("forward_auth", "paid")
    return out


async def bench(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await db.migrate(conn)
    finally:
        await conn.close()
    tokens = [{"x-payment-token": t} for t in await issue_tokens(dsn, args.concurrency)]
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as raw:
        work = Path(raw)
        async with upstream_process(args.upstream) as up_port:
            config = work / "gateway.toml"
            config.write_text(gateway_toml(f"http://127.0.0.1:{up_port}"))
            async with (
                api_process(dsn, config, work) as (api_port, api_pid),
                profiled(api_pid, args.profile),
            ):
                sides = {
                    "direct": (up_port, UPSTREAM_PATH, []),
                    "free": (api_port, "/v1/free", []),
                    "paid": (api_port, "/v1/paid", tokens),
                }
                if args.no_nginx:
                    return await compare(sides, args)
                # The recipe forwards the payer's path: under /unsigned/echo/ it reaches
                # the same upstream handler as every other side.
                values = {
                    "WATCHER": f"http://127.0.0.1:{api_port}",
                    "UPSTREAM": f"http://127.0.0.1:{up_port}{UPSTREAM_PATH}/",
                    "UPSTREAM_TIMEOUT": "30s",
                    "PLAIN_PORT": free_port(),
                }
                conf = nginx_recipe() + NGINX_PLAIN
                async with proxies.nginx(conf, values=values) as nginx:
                    sides["forward_auth"] = (nginx.port, "/v1/paid", tokens)
                    sides["nginx"] = (int(values["PLAIN_PORT"]), "/v1/plain", [])
                    return await compare(sides, args)


def report(result: dict[str, Any]) -> str:
    lines = [f"gateway bench ({result['upstream']} upstream, {result['concurrency']} connections)"]
    for name in ("direct", "free", "paid", "forward_auth", "nginx"):
        if name in result:
            s = result[name]
            lines.append(
                f"  {name:<13} {s['rps']:>8.1f} req/s  p50 {s['p50_ms']:>7.2f} ms  "
                f"p99 {s['p99_ms']:>7.2f} ms  {s['statuses']}"
            )
    for name, r in result["ratios"].items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("  ok" if r["median"] >= target else "  MISSED")
        goal = "" if target is None else f" (target >= {target})"
        lines.append(f"  {name:<24} {r['median']:.3f}{goal}{verdict}  rounds {r['rounds']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--upstream", choices=["devkit", "minimal"], default="devkit")
    parser.add_argument("--no-nginx", action="store_true", help="skip the forward-auth side")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the API into FILE (raw)")
    parser.add_argument("--serve-upstream", choices=["devkit", "minimal"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        return serve_upstream(args.serve_upstream)
    if not (1 <= args.rounds <= 100 and 0.1 <= args.seconds <= 60 and 1 <= args.concurrency <= 256):
        parser.error("--rounds 1..100, --seconds 0.1..60, --concurrency 1..256")
    admin = os.environ.get("DATABASE_URL")
    if admin:
        name = f"bench_gateway_{uuid.uuid4().hex[:8]}"
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

        figures = asyncio.run(go())
    else:
        with tempfile.TemporaryDirectory() as tmp, db.EmbeddedPostgres(Path(tmp)) as dsn:
            figures = asyncio.run(bench(dsn, args))
    result = {
        "bench": "gateway",
        "upstream": args.upstream,
        "concurrency": args.concurrency,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        **figures,
        "targets": TARGETS,
    }
    print(json.dumps(result))
    print(report(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
