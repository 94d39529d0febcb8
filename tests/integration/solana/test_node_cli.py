"""scripts/solana_node.py: starts, prints its URLs and mint as JSON, serves, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "solana_node.py"


def test_cli_prints_urls_and_mint_then_serves() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--port",
            "0",
            "--slot-ms",
            "50",
            "--owner",
            "B2v68t8MXb9zUms1VQKuCcvjrjKDK6fLd8ZngqmBGy1M",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = None
        for _ in range(5):  # two URL lines, then the JSON line
            line = proc.stdout.readline()
            if line.startswith("{"):
                info = json.loads(line)
                break
        assert info is not None and info["rpc_url"].startswith("http://127.0.0.1:")
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "getAccountInfo",
            "params": [info["usdc_mint"], {"encoding": "jsonParsed", "commitment": "confirmed"}],
        }
        mint = httpx.post(info["rpc_url"], json=body, timeout=10).json()["result"]["value"]
        assert mint["data"]["parsed"]["info"]["decimals"] == 6
        assert info["owner_token_account"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert code == 0
