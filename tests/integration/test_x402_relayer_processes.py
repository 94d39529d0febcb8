"""Two API processes (`watcher api`, real uvicorn, one PostgreSQL, one anvil) settling x402
payments with one relayer key at once: every payment settled exactly once, none lost, and a
process killed after handing out a nonce (its transaction lost by the node) wedges nothing.
Then, in one process: a transaction the node drops is sent again; one it refuses gives its
nonce to the next payment.

anvil mines on a timer here, not on every transaction: transactions wait in its pool as on
a real chain, so two processes reading the pending nonce at once collide as they would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from starlette.responses import Response

from api.app import create_app
from devkit.anvil import ROOT, TRANSFER_TOPIC, Anvil, free_port, start_anvil
from devkit.api_support import serve
from devkit.faultproxy import FaultProxy
from devkit.x402kit import BASE_CHAIN_ID, PRICE, ROUTE, World, decode_header, make_world, v2_header
from tests.integration.test_daemon import _env
from watcher import db

SETTLE_TIMEOUT = "30"


@pytest.fixture
async def base_anvil() -> AsyncIterator[Anvil]:
    node = await start_anvil(chain_id=BASE_CHAIN_ID)
    try:
        yield node
    finally:
        await node.close()


def _start_api(tmp_path: Path, world: World, database_url: str, port: int) -> subprocess.Popen[str]:
    env = _env(
        tmp_path,
        PYTHONPATH=str(ROOT),  # this tree's code, whatever the venv has installed
        DATABASE_URL=database_url,
        WATCHER_API_PORT=str(port),
        X402_BASE_RPC_URL=world.node.url,
        X402_BASE_PAYMENT_ADDRESS=world.receiver,
        X402_BASE_USDC_ADDRESS=world.token.address,
        X402_BASE_CHAIN_ID=str(BASE_CHAIN_ID),
        X402_RELAYER_PRIVATE_KEY=world.relayer.key.hex(),
        X402_SETTLE_TIMEOUT_SECONDS=SETTLE_TIMEOUT,
    )
    with (tmp_path / "stderr.log").open("w") as log:  # a file: a pipe could fill and block it
        return subprocess.Popen(
            [sys.executable, "-m", "watcher", "api"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )


async def _wait_ready(
    proc: subprocess.Popen[str], url: str, log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while True:
            assert proc.poll() is None, f"the API exited: {_tail(log)}"
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            await asyncio.sleep(0.1)


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


async def _two_apis(
    tmp_path: Path, world: World, database_url: str, procs: list[subprocess.Popen[str]]
) -> list[str]:
    urls = []
    for name in ("a", "b"):
        port = free_port()
        (tmp_path / name).mkdir()
        procs.append(_start_api(tmp_path / name, world, database_url, port))
        urls.append(f"http://127.0.0.1:{port}")
    for proc, url, name in zip(procs, urls, ("a", "b"), strict=True):
        await _wait_ready(proc, url, tmp_path / name / "stderr.log")
    return urls


async def _payers(world: World, n: int) -> list[LocalAccount]:
    payers: list[LocalAccount] = [Account.create() for _ in range(n)]
    for p in payers:  # minted while anvil still mines on every transaction
        await world.token.mint(p.address.lower(), PRICE)
    return payers


async def _headers(url: str, world: World, payer: LocalAccount) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return await v2_header(http, world, payer=payer)


async def _pay(url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=90) as http:
        return await http.get(ROUTE, headers=headers)


async def _transfers_to_receiver(world: World) -> list[dict[str, Any]]:
    topic_to = "0x" + "00" * 12 + world.receiver[2:]
    logs: list[dict[str, Any]] = await world.node.rpc(
        "eth_getLogs",
        {
            "fromBlock": "0x0",
            "toBlock": "latest",
            "address": world.token.address,
            "topics": [TRANSFER_TOPIC, None, topic_to],
        },
    )
    return logs


def _senders(logs: list[dict[str, Any]]) -> list[str]:
    return ["0x" + log["topics"][1][-40:] for log in logs]


async def _mined_nonce(world: World) -> int:
    count = await world.node.rpc("eth_getTransactionCount", world.relayer.address, "latest")
    return int(count, 16)


async def _rows(pool: db.Pool, query: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch(query)]


def _assert_paid(resp: httpx.Response, payer: LocalAccount) -> str:
    assert resp.status_code == 200, resp.text
    settled = decode_header(resp.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True
    assert settled["payer"].lower() == payer.address.lower()
    return str(settled["transaction"])


async def test_two_processes_settle_twenty_payments_at_once_each_exactly_once(
    tmp_path: Path,
    base_anvil: Anvil,
    pool: db.Pool,
    database_url: str,
    procs: list[subprocess.Popen[str]],
) -> None:
    world = await make_world(base_anvil)
    payers = await _payers(world, 20)
    urls = await _two_apis(tmp_path, world, database_url, procs)
    headers = [await _headers(urls[i % 2], world, p) for i, p in enumerate(payers)]
    await base_anvil.rpc("evm_setAutomine", False)
    await base_anvil.rpc("evm_setIntervalMining", 1)

    answers = await asyncio.gather(
        *(_pay(urls[i % 2], h) for i, h in enumerate(headers))  # all at once, both processes
    )

    hashes = [_assert_paid(resp, p) for resp, p in zip(answers, payers, strict=True)]
    assert len(set(hashes)) == 20
    logs = await _transfers_to_receiver(world)
    assert sorted(_senders(logs)) == sorted(p.address.lower() for p in payers)  # once each
    assert {str(log["transactionHash"]) for log in logs} == set(hashes)
    assert await world.token.balance_of(world.receiver) == 20 * PRICE
    auths = await _rows(pool, "SELECT status, tx_hash FROM x402_authorizations")
    assert sorted(a["tx_hash"] for a in auths) == sorted(hashes)
    assert {a["status"] for a in auths} == {"settled"}
    txs = await _rows(pool, "SELECT nonce, tx_hash, status FROM relayer_transactions")
    assert sorted(t["nonce"] for t in txs) == list(range(20))  # no nonce twice, no gap
    assert {t["status"] for t in txs} == {"signed"}
    assert await _mined_nonce(world) == 20


async def _wait_in_pool(node: Anvil, pool: db.Pool, timeout: float = 30) -> str:
    """The hash of the first settlement transaction (recorded before broadcast), once the
    node holds it."""
    deadline = time.monotonic() + timeout
    while True:
        tx_hash = await pool.fetchval(
            "SELECT tx_hash FROM x402_authorizations WHERE tx_hash IS NOT NULL LIMIT 1"
        )
        if tx_hash is not None and await node.rpc("eth_getTransactionByHash", tx_hash):
            return str(tx_hash)
        assert time.monotonic() < deadline, "no relayer transaction reached the node"
        await asyncio.sleep(0.05)


async def test_a_process_killed_after_taking_a_nonce_wedges_nothing_and_settles_nothing_twice(
    tmp_path: Path,
    base_anvil: Anvil,
    pool: db.Pool,
    database_url: str,
    procs: list[subprocess.Popen[str]],
) -> None:
    """A is killed with its transaction in the node's pool, and the node then loses it (as
    if A died between storing and sending): its nonce is a gap. B's payments must still
    settle, A's stored transaction goes out once, and no payer pays twice."""
    world = await make_world(base_anvil)
    payers = await _payers(world, 6)
    urls = await _two_apis(tmp_path, world, database_url, procs)
    first = await _headers(urls[0], world, payers[0])
    later = [await _headers(urls[1], world, p) for p in payers[1:]]
    await base_anvil.rpc("evm_setAutomine", False)  # nothing is mined until we say

    victim = asyncio.create_task(_pay(urls[0], first))
    lost = await _wait_in_pool(base_anvil, pool)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=10)
    with pytest.raises(httpx.HTTPError):
        await victim
    await base_anvil.rpc("anvil_dropTransaction", lost)
    assert await base_anvil.rpc("eth_getTransactionByHash", lost) is None
    await asyncio.sleep(3.5)  # older than a send in flight: B knows it is lost
    await base_anvil.rpc("evm_setIntervalMining", 1)

    answers = await asyncio.gather(*(_pay(urls[1], h) for h in later))

    hashes = [_assert_paid(resp, p) for resp, p in zip(answers, payers[1:], strict=True)]
    logs = await _transfers_to_receiver(world)
    assert sorted(_senders(logs)) == sorted(p.address.lower() for p in payers)  # once each
    assert {str(log["transactionHash"]) for log in logs} == {*hashes, lost}
    assert await world.token.balance_of(world.receiver) == 6 * PRICE
    txs = await _rows(pool, "SELECT nonce, status FROM relayer_transactions ORDER BY nonce")
    assert [t["nonce"] for t in txs] == list(range(6))
    assert await _mined_nonce(world) == 6  # every nonce handed out is on chain: no gap left
    auths = await _rows(pool, "SELECT status, tx_hash FROM x402_authorizations ORDER BY id")
    assert [a["status"] for a in auths] == ["settling"] + ["settled"] * 5  # A's: never served
    assert auths[0]["tx_hash"] == lost


# ---- one process: the node losing or refusing a transaction ------------------------------


async def test_a_transaction_the_node_drops_while_we_wait_is_sent_again_and_settles(
    base_anvil: Anvil, pool: db.Pool
) -> None:
    world = await make_world(base_anvil, x402_settle_timeout_seconds=20)
    app = create_app(world.settings, pool)
    async with serve(app) as url:
        headers = await _headers(url, world, world.payer)
        await base_anvil.rpc("evm_setAutomine", False)
        paying = asyncio.create_task(_pay(url, headers))
        lost = await _wait_in_pool(base_anvil, pool)
        await base_anvil.rpc("anvil_dropTransaction", lost)
        assert await base_anvil.rpc("eth_getTransactionByHash", lost) is None
        await base_anvil.rpc("evm_setIntervalMining", 1)
        paid = await paying
    assert _assert_paid(paid, world.payer) == lost  # the same transaction, sent again
    assert await world.token.balance_of(world.receiver) == PRICE
    assert await _mined_nonce(world) == 1


async def test_a_send_the_node_refuses_gives_its_nonce_to_the_next_payment(
    base_anvil: Anvil, pool: db.Pool
) -> None:
    proxy = await FaultProxy(base_anvil.url, base_anvil.ws_url).start()
    refused: list[str] = []

    async def refuse_first_send(call: dict[str, Any], _: FaultProxy) -> Response | None:
        if call.get("method") != "eth_sendRawTransaction" or refused:
            return None
        refused.append(call["params"][0])
        error = {"code": -32000, "message": "insufficient funds for gas * price + value"}
        body = {"jsonrpc": "2.0", "id": call.get("id"), "error": error}
        return Response(json.dumps(body), media_type="application/json")

    proxy.intercept = refuse_first_send
    world = await make_world(base_anvil, x402_base_rpc_url=proxy.url)
    second: LocalAccount = Account.create()
    await world.token.mint(second.address.lower(), PRICE)
    try:
        app = create_app(world.settings, pool)
        async with serve(app) as url:
            first = await _pay(url, await _headers(url, world, world.payer))
            then = await _pay(url, await _headers(url, world, second))
    finally:
        await proxy.stop()
    assert first.status_code == 503, first.text  # refused for good: not settled, not served
    _assert_paid(then, second)
    txs = await _rows(pool, "SELECT nonce, status FROM relayer_transactions ORDER BY created_at")
    assert [(t["nonce"], t["status"]) for t in txs] == [(0, "replaced"), (0, "signed")]
    assert await _mined_nonce(world) == 1  # the next payment took nonce 0: no gap
    assert await world.token.balance_of(world.receiver) == PRICE
