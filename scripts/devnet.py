"""A whole local payment stack in one command (``make devnet``).

    python scripts/devnet.py [--data-dir .devnet] [--api-port 8000] [--anvil-port 8545]
                             [--solana-port 8899] [--solana-ws-port 8900]
                             [--metrics-port 9102] [--confirmations 2]

Starts, on 127.0.0.1 only:
  * anvil (npm ``@foundry-rs/anvil``) mining a block a second, with the 6-decimal
    TestToken deployed as USDC and 1,000,000 USDC minted to the payer account;
  * the LiteSVM-backed Solana node (real SPL Token program) with a USDC mint and
    a funded payer (``scripts/solana_node.py``);
  * ``watcher run``: the embedded PostgreSQL, both followers and the API, with a refund
    wallet of its own on anvil (a fresh key, funded with ETH and 1,000 USDC) and the
    screening variables the caller sets (``SCREENING_VARIABLES``), so holds and refunds
    can be tried locally (docs/holds-and-refunds.md, "Try it on the devnet").

First it checks that every port it needs is free (the embedded PostgreSQL listens on a
unix socket only) and, if one is taken, says which, and the flag that moves it, and exits 1.
Once the API answers with this devnet's configuration, it writes ``<data-dir>/devnet.json``
(what ``scripts/pay.py`` needs) and ``<data-dir>/watcher.env`` (the watcher's variables,
e.g. for ``watcher doctor``), prints "devnet up" and the pay.py command to run, and waits
for Ctrl-C / SIGTERM, which stops everything. Each start begins a fresh chain, so
the ledger (the embedded database under the data dir) is started fresh too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:
    import httpx
    from solders.keypair import Keypair
except ImportError as exc:  # a bare `python` without the project's packages
    sys.exit(
        f"devnet.py: {exc.name} is missing: run it with the project's interpreter, "
        ".venv/bin/python scripts/devnet.py (`make install` creates .venv), or `make devnet`"
    )

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devkit.anvil import Anvil, deploy_token, start_anvil
from watcher import keys

STARTUP_SECONDS = 90
# The screening rules reach the devnet's watcher from the caller's environment, so holds
# can be tried locally (docs/holds-and-refunds.md): e.g. X402_HOLD_ABOVE_USD=0.5.
SCREENING_VARIABLES = frozenset(
    {"X402_DENYLIST_FILE", "X402_HOLD_ABOVE_USD", "X402_MAX_PAYMENT_AGE_DAYS"}
)

# Every TCP port the devnet listens on: (flag, attribute, what listens there).
PORTS = (
    ("--api-port", "api_port", "the API"),
    ("--metrics-port", "metrics_port", "the watcher's metrics"),
    ("--anvil-port", "anvil_port", "anvil (the EVM chain)"),
    ("--solana-port", "solana_port", "the Solana node's JSON-RPC"),
    ("--solana-ws-port", "solana_ws_port", "the Solana node's websocket"),
)


class DevnetError(Exception):
    """A start that cannot go on; the message says what to do."""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT / ".devnet")
    p.add_argument("--api-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=9102)
    p.add_argument("--anvil-port", type=int, default=8545)
    p.add_argument("--solana-port", type=int, default=8899)
    p.add_argument(
        "--solana-ws-port", type=int, default=None, help="default: the Solana HTTP port + 1"
    )
    p.add_argument("--confirmations", type=int, default=2, help="EVM blocks before credit")
    args = p.parse_args()
    if args.solana_ws_port is None:
        args.solana_ws_port = args.solana_port + 1
    return args


def _taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: a port left in TIME_WAIT is free to them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def port_problems(args: argparse.Namespace) -> list[str]:
    """One line per port that is taken (or asked for twice), naming the flag that moves it."""
    problems, seen = [], {}
    for flag, attr, what in PORTS:
        port = getattr(args, attr)
        if port in seen:
            problems.append(f"port {port} is asked for twice ({seen[port]} and {flag})")
        elif _taken(port):
            problems.append(
                f"port {port} ({what}) is taken by another process: stop it, or pick another "
                f"port with {flag} (make devnet DEVNET_ARGS='{flag} {port + 1000}')"
            )
        seen.setdefault(port, flag)
    return problems


def last_error(log: Path) -> str:
    """Why the watcher stopped, from its log: the plain text it printed last (a
    configuration error), else its last error line (its logs are JSON lines)."""
    lines = [ln.rstrip() for ln in _tail(log, 20000).splitlines() if ln.strip()]
    text: list[str] = []
    for ln in reversed(lines):
        if ln.startswith("{"):
            break
        text.insert(0, ln)
    if text:
        return "\n  ".join(text[-8:])
    errors = [ln for ln in lines if '"level": "error"' in ln or '"level": "critical"' in ln]
    return (errors or lines or ["(no output)"])[-1][:600]


def _tail(path: Path, limit: int = 2000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else ""


async def start_solana(
    port: int, ws_port: int, owner: str, log: Path
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The local Solana node; returns the process and the JSON line it prints."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "solana_node.py"),
            "--port",
            str(port),
            "--ws-port",
            str(ws_port),
            "--owner",
            owner,
            "--finality-depth",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            tail = await asyncio.to_thread(_tail, log)
            raise DevnetError(f"the Solana node exited with {proc.wait()}; {log}:\n{tail}")
        if line.startswith("{"):
            info: dict[str, Any] = json.loads(line)
            return proc, info
    raise DevnetError(f"the Solana node did not start within {STARTUP_SECONDS} s; see {log}")


def watcher_env(
    args: argparse.Namespace,
    anvil: Anvil,
    token: str,
    merchant: str,
    owner: str,
    sol: dict[str, Any],
    admin_key: str,
    refund_key: str,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL")
        or k in SCREENING_VARIABLES
    }
    env.update(
        WATCHER_ENV="development",
        WATCHER_DATA_DIR=str(args.data_dir),
        WATCHER_API_PORT=str(args.api_port),
        WATCHER_METRICS_PORT=str(args.metrics_port),
        X402_ADMIN_KEY=admin_key,
        X402_BASE_RPC_URL=anvil.url,
        X402_BASE_WS_URL=anvil.ws_url,
        X402_BASE_CHAIN_ID=str(anvil.chain_id),
        X402_BASE_USDC_ADDRESS=token,
        X402_BASE_PAYMENT_ADDRESS=merchant,
        X402_BASE_CONFIRMATIONS=str(args.confirmations),
        X402_BASE_START_BLOCK="0",
        X402_SOLANA_RPC_URL=sol["rpc_url"],
        X402_SOLANA_WS_URL=sol["ws_url"],
        X402_SOLANA_USDC_MINT=sol["usdc_mint"],
        X402_SOLANA_PAYMENT_ADDRESS=owner,
        # A refund wallet of its own, funded below: `watcher refunds` sends from it.
        X402_REFUND_EVM_PRIVATE_KEY=refund_key,
    )
    return env


async def _answers_as_ours(client: httpx.AsyncClient, api: str, merchant: str) -> bool:
    # Ready, and offering this devnet's receiving address: our watcher, not another process.
    if (await client.get(f"{api}/readyz")).status_code != 200:
        return False
    chains = (await client.get(f"{api}/x402/supported-chains")).json().get("chains", [])
    return any(str(c.get("pay_to", "")).lower() == merchant.lower() for c in chains)


async def wait_ready(api: str, proc: subprocess.Popen[bytes], merchant: str, log: Path) -> None:
    """Until the watcher's API answers with this devnet's configuration."""
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DevnetError(
                    f"the watcher exited with {proc.returncode} before its API answered: "
                    f"{last_error(log)} (the whole log: {log})"
                )
            with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
                if await _answers_as_ours(client, api, merchant):
                    return
            await asyncio.sleep(0.2)
    raise DevnetError(f"{api} did not answer within {STARTUP_SECONDS} s; see {log}")


def pay_command(args: argparse.Namespace) -> str:
    """The pay.py command line that works from the repository root: this interpreter (it
    has httpx, which a bare `python` may lack), and the state file when it is not the
    default."""
    exe = Path(sys.executable)
    python = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else str(exe)
    cmd = [python, "scripts/pay.py", "--chain", "base"]
    state = (args.data_dir / "devnet.json").resolve()
    if state != ROOT / ".devnet" / "devnet.json":
        cmd += ["--state", str(state)]
    return shlex.join(cmd)


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


async def main(args: argparse.Namespace) -> int:
    problems = port_problems(args)
    if problems:
        for line in problems:
            print(f"devnet: {line}", file=sys.stderr, flush=True)
        return 1
    try:
        return await run(args)
    except (DevnetError, RuntimeError) as exc:  # RuntimeError: anvil did not start
        print(f"devnet: {exc}", file=sys.stderr, flush=True)
        return 1


async def run(args: argparse.Namespace) -> int:
    # A fresh chain every time, so a fresh ledger too (cursors of an old chain would not fit).
    shutil.rmtree(args.data_dir, ignore_errors=True)
    args.data_dir.mkdir(parents=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    anvil = await start_anvil("--block-time", "1", port=args.anvil_port)
    sol_proc: subprocess.Popen[str] | None = None
    watcher: subprocess.Popen[bytes] | None = None
    try:
        usdc = await deploy_token(anvil)
        payer, merchant = anvil.accounts[1], anvil.accounts[9]
        await usdc.mint(payer, 1_000_000 * 10**6)
        refund_key = "0x" + secrets.token_hex(32)
        refund_wallet = keys.evm_address_of(refund_key)
        await anvil.rpc("anvil_setBalance", refund_wallet, hex(10**20))
        await usdc.mint(refund_wallet, 1_000 * 10**6)
        owner = Keypair()
        sol_proc, sol = await start_solana(
            args.solana_port,
            args.solana_ws_port,
            str(owner.pubkey()),
            args.data_dir / "solana_node.log",
        )
        admin_key = secrets.token_urlsafe(32)
        env = watcher_env(
            args, anvil, usdc.address, merchant, str(owner.pubkey()), sol, admin_key, refund_key
        )
        log = args.data_dir / "watcher.log"
        watcher = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        api = f"http://127.0.0.1:{args.api_port}"
        await wait_ready(api, watcher, merchant, log)
        info = {
            "api": api,
            "admin_key": admin_key,
            "base": {
                "rpc_url": anvil.url,
                "usdc": usdc.address,
                "payer": payer,
                "pay_to": merchant,
                "refund_wallet": refund_wallet,
                "confirmations": args.confirmations,
            },
            "solana": {
                "rpc_url": sol["rpc_url"],
                "usdc_mint": sol["usdc_mint"],
                "payer_secret": sol["payer_secret"],
                "owner": str(owner.pubkey()),
            },
        }
        state = args.data_dir / "devnet.json"
        state.write_text(json.dumps(info, indent=2))
        # The watcher's configuration, for `env $(cat .devnet/watcher.env) watcher doctor`.
        (args.data_dir / "watcher.env").write_text(
            "".join(f"{k}={v}\n" for k, v in env.items() if k.startswith(("X402_", "WATCHER_")))
        )
        print(
            f"devnet up: API {api}/docs, metrics :{args.metrics_port}, "
            f"anvil {anvil.url} (USDC {usdc.address}), solana {sol['rpc_url']}",
            flush=True,
        )
        print(f"state in {state}; logs in {args.data_dir}/*.log", flush=True)
        print(f"next: {pay_command(args)}   (or --chain solana); Ctrl-C stops", flush=True)
        while not stopping.is_set():
            if watcher.poll() is not None:
                raise DevnetError(
                    f"the watcher exited with {watcher.returncode}: {last_error(log)} "
                    f"(the whole log: {log})"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1)
        return 0
    finally:
        stop(watcher)
        stop(sol_proc)
        await anvil.close()
        print("devnet stopped", flush=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
