"""Drive the official x402 TypeScript clients (npm ``@x402/fetch`` with ``@x402/evm`` /
``@x402/svm``, and the older ``x402-fetch``) from Python tests: one paid request per call,
run by Node as ``devkit/x402_node/pay.mjs``, answered as a :class:`Result`.

The subprocess is awaited (not run blocking) so the API and the Solana test node serving
from the test's own event loop keep answering while the client pays."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "devkit" / "x402_node" / "pay.mjs"

Client = Literal["fetch-v2", "x402-fetch"]
Family = Literal["evm", "svm"]


@dataclass(frozen=True)
class Result:
    """What the client's final response was (after it paid, or gave up)."""

    status: int
    headers: dict[str, str]  # lower-case names
    payment_response: dict[str, Any] | None  # PAYMENT-RESPONSE / X-PAYMENT-RESPONSE decoded
    body: str
    json: Any = field(default=None)


class ClientError(RuntimeError):
    """The client threw before it got a final response (its message, and Node's stderr)."""


async def pay(
    url: str,
    *,
    client: Client,
    family: Family,
    key: str,
    rpc: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    version: int = 2,
    max_units: int = 1_000_000,
    timeout: float = 90.0,
) -> Result:
    """One paid request to ``url`` (``method``, extra ``headers``, text ``body``) with the
    named official client; ``version=1`` makes ``fetch-v2`` pay the v1 body. Raises
    :class:`ClientError` when the client throws, :class:`TimeoutError` past ``timeout``."""
    node = shutil.which("node")
    if node is None:
        raise ClientError("node is not on PATH")
    args = [node, str(SCRIPT), "--client", client, "--family", family, "--url", url]
    args += ["--method", method, "--version", str(version), "--max", str(max_units)]
    for name, value in (headers or {}).items():
        args += ["--header", f"{name}: {value}"]
    if body is not None:
        args += ["--body", body]
    if rpc:
        args += ["--rpc", rpc]
    args += ["--key", key]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    data = json.loads(lines[-1]) if lines else {"error": "no output"}
    if "error" in data:
        raise ClientError(f"{data['error']} (stderr: {err.decode()[-2000:]})")
    return Result(
        status=int(data["status"]),
        headers=dict(data["headers"]),
        payment_response=data.get("paymentResponse"),
        body=data["body"],
        json=data.get("json"),
    )
