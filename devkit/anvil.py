"""A real anvil (npm ``@foundry-rs/anvil``) on a free loopback port, and contract helpers.

Anvil's default accounts are unlocked, so tests send transactions with
``eth_sendTransaction`` and need no keys.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

ROOT = Path(__file__).resolve().parent.parent
ANVIL_BIN = ROOT / "node_modules" / ".bin" / "anvil"
ARTIFACTS = ROOT / "contracts" / "build"
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never the same one twice in this process.

    The port is released before anvil binds it, so two anvils started concurrently
    could otherwise be handed the same port and end up sharing one process.
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh loopback port after 100 tries")


class RpcFailed(Exception):
    pass


@dataclass
class Anvil:
    """A running anvil process."""

    port: int
    process: subprocess.Popen[bytes]
    chain_id: int = 31337
    accounts: list[str] = field(default_factory=list)
    _client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def rpc(self, method: str, *params: Any) -> Any:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30)
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
        resp = await self._client.post(self.url, json=body)
        data = resp.json()
        if "error" in data:
            raise RpcFailed(f"{method}: {data['error']}")
        return data["result"]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()

    # ---- chain helpers -----------------------------------------------------------

    async def block_number(self) -> int:
        return int(await self.rpc("eth_blockNumber"), 16)

    async def mine(self, blocks: int = 1) -> None:
        await self.rpc("anvil_mine", hex(blocks))

    async def send(self, sender: str, to: str | None, data: str, gas: int | None = None) -> str:
        """Send a transaction from an unlocked account; returns its hash once mined."""
        tx: dict[str, Any] = {"from": sender, "data": data}
        if to is not None:
            tx["to"] = to
        if gas is not None:
            tx["gas"] = hex(gas)
        tx_hash: str = await self.rpc("eth_sendTransaction", tx)
        return tx_hash

    async def receipt(self, tx_hash: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rec = await self.rpc("eth_getTransactionReceipt", tx_hash)
            if rec is not None:
                r: dict[str, Any] = rec
                return r
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no receipt for {tx_hash}")


async def start_anvil(
    *extra: str, chain_id: int = 31337, timeout: float = 20.0, port: int = 0
) -> Anvil:
    """Start anvil (on ``port``, or a free one) and wait until it answers eth_chainId."""
    if not ANVIL_BIN.exists():
        raise RuntimeError(f"{ANVIL_BIN} missing: run `npm ci` (make test does it)")
    port = port or free_port()
    proc = subprocess.Popen(
        [
            str(ANVIL_BIN),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--chain-id",
            str(chain_id),
            "--silent",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = Anvil(port=port, process=proc, chain_id=chain_id)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            if proc.stderr is not None:
                proc.stderr.close()
            raise RuntimeError(f"anvil exited with {proc.returncode}: {err}")
        try:
            if int(await node.rpc("eth_chainId"), 16) == chain_id:
                break
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        if time.monotonic() > deadline:
            await node.close()
            raise TimeoutError("anvil did not answer eth_chainId")
        await asyncio.sleep(0.05)
    node.accounts = [a.lower() for a in await node.rpc("eth_accounts")]
    return node


# ---- contracts ------------------------------------------------------------------------


def artifact(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return data


def calldata(signature: str, *args: Any) -> str:
    """ABI-encode a call, e.g. ``calldata("transfer(address,uint256)", to, 5)``."""
    types = signature[signature.index("(") + 1 : -1]
    type_list = [t for t in _split_types(types)] if types else []
    return (
        "0x"
        + (function_signature_to_4byte_selector(signature) + encode(type_list, list(args))).hex()
    )


def _split_types(types: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in types:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    out.append(cur)
    return out


@dataclass
class Token:
    """A deployed TestToken (6-decimal ERC-20)."""

    node: Anvil
    address: str  # lowercase

    @property
    def checksum(self) -> str:
        return to_checksum_address(self.address)

    async def mint(self, to: str, amount: int) -> dict[str, Any]:
        tx = await self.node.send(
            self.node.accounts[0], self.address, calldata("mint(address,uint256)", to, amount)
        )
        return await self.node.receipt(tx)

    async def transfer(self, sender: str, to: str, amount: int) -> dict[str, Any]:
        tx = await self.node.send(
            sender, self.address, calldata("transfer(address,uint256)", to, amount)
        )
        return await self.node.receipt(tx)

    async def batch_transfer(
        self, sender: str, tos: list[str], amounts: list[int]
    ) -> dict[str, Any]:
        tx = await self.node.send(
            sender,
            self.address,
            calldata("batchTransfer(address[],uint256[])", tos, amounts),
            gas=100_000 + 40_000 * len(tos),
        )
        return await self.node.receipt(tx)

    async def balance_of(self, owner: str) -> int:
        out = await self.node.rpc(
            "eth_call",
            {"to": self.address, "data": calldata("balanceOf(address)", owner)},
            "latest",
        )
        return int(out, 16)


async def deploy_token(node: Anvil, name: str = "USD Coin", symbol: str = "USDC") -> Token:
    """Deploy TestToken and return it; the deployer is anvil's first account."""
    art = artifact("TestToken")
    data = art["bytecode"] + encode(["string", "string"], [name, symbol]).hex()
    tx = await node.send(node.accounts[0], None, data, gas=3_000_000)
    rec = await node.receipt(tx)
    if rec["status"] != "0x1" or not rec.get("contractAddress"):
        raise RuntimeError(f"deploy failed: {rec}")
    return Token(node=node, address=rec["contractAddress"].lower())


async def deploy_sanctions_oracle(node: Anvil, sanctioned: list[str]) -> str:
    """Deploy MockSanctionsOracle answering true for ``sanctioned``; its lowercase address.
    The deployer (anvil's first account) may ``setBroken(true)`` to make it revert."""
    data = artifact("MockSanctionsOracle")["bytecode"] + encode(["address[]"], [sanctioned]).hex()
    tx = await node.send(node.accounts[0], None, data, gas=3_000_000)
    rec = await node.receipt(tx)
    if rec["status"] != "0x1" or not rec.get("contractAddress"):
        raise RuntimeError(f"deploy failed: {rec}")
    return str(rec["contractAddress"]).lower()
