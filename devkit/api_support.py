"""Helpers for the API tests and benches: settings, a real-HTTP client on the ASGI app, ledger rows.

Payments are put in the ledger the way a follower does it (``ledger.record``
then ``ledger.credit`` in one transaction), so invoice matching runs exactly
as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import FastAPI
from solders.keypair import Keypair

from api.app import create_app
from api.claims import claim_message
from watcher import daemon, db, ledger, networks
from watcher.settings import Settings

BASE_RECEIVER = "0x" + "ab" * 20
ETH_RECEIVER = "0x" + "cd" * 20
SOLANA_OWNER = str(Keypair().pubkey())
ADMIN_KEY = secrets.token_urlsafe(32)
OPERATOR = "tester@example.com"
# What every admin request sends: the key, and who is acting (api/routes/admin.py).
ADMIN_HEADERS = {"x-admin-key": ADMIN_KEY, "x-admin-operator": OPERATOR}
BASE_USDC = networks.get("base").usdc.lower()
SOLANA_MINT = networks.get("solana").usdc


async def fresh_rate_window(needed_seconds: float = 20.0) -> None:
    """Rate limits count per wall-clock minute. A test that counts up to a limit starts
    early enough in a minute that the window cannot roll over under it (waits < 20 s)."""
    now = datetime.now(UTC)
    left = 60 - (now.second + now.microsecond / 1_000_000)
    if left < needed_seconds:
        await asyncio.sleep(left + 0.1)


def make_settings(**over: Any) -> Settings:
    values: dict[str, Any] = {
        "x402_base_payment_address": BASE_RECEIVER,
        "x402_ethereum_payment_address": ETH_RECEIVER,
        "x402_solana_payment_address": SOLANA_OWNER,
        "x402_admin_key": ADMIN_KEY,
    }
    values.update(over)
    return Settings(_env_file=None, **values)


class _InProcess(httpx.AsyncClient):
    """An HTTP client on the ASGI app, which runs no lifespan: closing the client closes
    what the app opened (its RPC pools), as the app's shutdown would."""

    def __init__(self, app: FastAPI, host: str) -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(host, 40000))
        super().__init__(transport=transport, base_url="http://testserver", timeout=30)
        self._app = app

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            await self._app.state.clients.aclose()


def client(app: FastAPI, host: str = "127.0.0.1") -> httpx.AsyncClient:
    return _InProcess(app, host)


def app_for(pool: db.Pool, **over: Any) -> FastAPI:
    return create_app(make_settings(**over), pool)


def evm_hash(i: int) -> str:
    return "0x" + secrets.token_hex(31) + f"{i % 256:02x}"


async def record_payment(
    pool: db.Pool,
    *,
    chain: str = "base",
    tx_hash: str | None = None,
    log_index: int = 0,
    from_address: str | None = None,
    to_address: str = BASE_RECEIVER,
    token: str = BASE_USDC,
    amount: int = 1_000_000,
    block_number: int = 100,
    reference_keys: Sequence[str] = (),
    credit: bool = True,
) -> tuple[int, str]:
    """Record (and by default credit) one transfer; returns (payment id, tx hash)."""
    tx = tx_hash or evm_hash(log_index)
    t = ledger.Transfer(
        chain=chain,
        tx_hash=tx,
        log_index=log_index,
        block_number=block_number,
        block_hash=None if networks.family(chain) == "solana" else "0x" + secrets.token_hex(32),
        token=token,
        to_address=to_address,
        amount=amount,
        from_address=from_address,
        reference_keys=tuple(reference_keys),
    )
    async with pool.acquire() as conn, conn.transaction():
        (row,) = await ledger.record(conn, [t])
        if credit:
            await ledger.credit(conn, [row["id"]])
    return int(row["id"]), tx


def evm_sign(key: Any, chain: str, tx_hash: str) -> str:
    signed = Account.sign_message(encode_defunct(text=claim_message(chain, tx_hash)), key.key)
    return "0x" + bytes(signed.signature).hex()


def solana_sign(kp: Keypair, tx_hash: str) -> str:
    return str(kp.sign_message(claim_message("solana", tx_hash).encode()))


async def buy_token(
    http: httpx.AsyncClient, pool: db.Pool, amount: int = 1_000_000
) -> dict[str, Any]:
    """A credited payment from a fresh EOA, claimed with its signature: the token response."""
    payer = Account.create()
    _, tx = await record_payment(pool, from_address=payer.address.lower(), amount=amount)
    resp = await http.post(
        "/x402/generate-token",
        json={"chain": "base", "tx_hash": tx, "signature": evm_sign(payer, "base", tx)},
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def transfers_from_receipt(
    receipt: dict[str, Any], chain: str, token: str, receiver: str
) -> list[ledger.Transfer]:
    """What the EVM follower records from a receipt: USDC Transfer logs toward ``receiver``."""
    from devkit.anvil import TRANSFER_TOPIC

    out = []
    for log in receipt["logs"]:
        topics = log["topics"]
        if log["address"].lower() != token or topics[0] != TRANSFER_TOPIC:
            continue
        to = "0x" + topics[2][-40:]
        if to != receiver:
            continue
        out.append(
            ledger.Transfer(
                chain=chain,
                tx_hash=receipt["transactionHash"].lower(),
                log_index=int(log["logIndex"], 16),
                block_number=int(log["blockNumber"], 16),
                block_hash=log["blockHash"].lower(),
                token=token,
                to_address=to,
                amount=int(log["data"], 16),
                from_address="0x" + topics[1][-40:],
            )
        )
    return out


async def follow_receipt(
    pool: db.Pool, receipt: dict[str, Any], chain: str, token: str, receiver: str, *, credit: bool
) -> list[int]:
    """Record (and optionally credit) a receipt's transfers as the follower would."""
    transfers = transfers_from_receipt(receipt, chain, token, receiver)
    async with pool.acquire() as conn, conn.transaction():
        rows = await ledger.record(conn, transfers)
        ids = [int(r["id"]) for r in rows]
        if credit:
            await ledger.credit(conn, ids)
    return ids


class _QuietServer(uvicorn.Server):
    """uvicorn leaving the test runner's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in this event loop; yields its URL."""
    from devkit.anvil import free_port

    port = free_port()
    # Served as production serves it (proxy headers handled by us, not uvicorn).
    server = _QuietServer(daemon.uvicorn_config(app, "127.0.0.1", port))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):  # bounded: 10 s
            if server.started:
                break
            await asyncio.sleep(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
