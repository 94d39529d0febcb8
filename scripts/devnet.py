"""A whole local payment stack in one command (``make devnet``).

    python scripts/devnet.py [--data-dir .devnet] [--api-port 8000] [--anvil-port 8545]
                             [--solana-port 8899] [--solana-ws-port 8900]
                             [--metrics-port 9102] [--confirmations 2]

Starts, on 127.0.0.1 only:
  * anvil (npm ``@foundry-rs/anvil``) mining a block a second, with the 6-decimal
    TestToken deployed as USDC and 1,000,000 USDC minted to the payer account;
  * the LiteSVM-backed Solana node (real SPL Token program) with a USDC mint and
    a funded payer (``scripts/solana_node.py``);
  * ``watcher run``: the embedded PostgreSQL, both followers and the API.

Then writes ``<data-dir>/devnet.json`` (what ``scripts/pay.py`` needs) and
``<data-dir>/watcher.env`` (the watcher's variables, e.g. for ``watcher doctor``), and waits
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
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from solders.keypair import Keypair

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devkit.anvil import Anvil, deploy_token, start_anvil

STARTUP_SECONDS = 90


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
    return p.parse_args()


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
            raise RuntimeError(f"solana node exited ({proc.wait()}); {log}:\n{tail}")
        if line.startswith("{"):
            info: dict[str, Any] = json.loads(line)
            return proc, info
    raise TimeoutError("solana node did not start")


def watcher_env(
    args: argparse.Namespace,
    anvil: Anvil,
    token: str,
    merchant: str,
    owner: str,
    sol: dict[str, Any],
    admin_key: str,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("X402_", "STRIPE_", "WATCHER_")) and k != "DATABASE_URL"
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
    )
    return env


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"watcher exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer")


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
        owner = Keypair()
        sol_proc, sol = await start_solana(
            args.solana_port,
            args.solana_ws_port if args.solana_ws_port is not None else args.solana_port + 1,
            str(owner.pubkey()),
            args.data_dir / "solana_node.log",
        )
        admin_key = secrets.token_urlsafe(32)
        env = watcher_env(args, anvil, usdc.address, merchant, str(owner.pubkey()), sol, admin_key)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(args.data_dir / "watcher.log").open("wb"),
        )
        api = f"http://127.0.0.1:{args.api_port}"
        await wait_ready(f"{api}/readyz", watcher)
        info = {
            "api": api,
            "admin_key": admin_key,
            "base": {
                "rpc_url": anvil.url,
                "usdc": usdc.address,
                "payer": payer,
                "pay_to": merchant,
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
        print(
            "next: python scripts/pay.py --chain base   (or --chain solana); Ctrl-C stops",
            flush=True,
        )
        while not stopping.is_set():
            if watcher.poll() is not None:
                print(f"watcher exited with {watcher.returncode}; see watcher.log", flush=True)
                return 1
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
