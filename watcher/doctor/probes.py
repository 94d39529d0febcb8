"""Network rows of the doctor: RPC endpoints, the USDC contract and mint, the database, Stripe.

Each probe returns rows and may raise; :func:`guarded` bounds it with a seconds
and turns any failure into a ✗ row, so one dead endpoint never hides the others.
RPC goes through :class:`watcher.rpc.RpcPool` (one pool per endpoint, so each
endpoint is judged on its own); ``transport`` is the test seam.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any

import asyncpg
import httpx
import structlog
import websockets
from websockets.asyncio.client import connect

from watcher import chain_settings, db, errors, networks, rpc
from watcher.doctor.report import Check, Status, mask_dsn, secret
from watcher.keys import redact_url
from watcher.settings import EvmChain, Settings, SolanaChain

log = structlog.get_logger(__name__)

SLOW_SECONDS = 1.0
DECIMALS_SELECTOR = "0x313ce567"  # decimals()
ATA_PROGRAM = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"


def _var(network: str, suffix: str) -> str:
    """The variable of a network's setting, as the operator types it."""
    return chain_settings.prefix(networks.get(network)).upper() + suffix


async def guarded(
    group: str, name: str, probe: Awaitable[list[Check]], seconds: float
) -> list[Check]:
    """Run one probe under ``seconds``; a seconds or error becomes a ✗ row naming it."""
    try:
        async with asyncio.timeout(seconds):
            return await probe
    except TimeoutError:
        return [
            Check(group, name, "fail", f"no answer within {seconds:g} s", _fix_unreachable(group))
        ]
    except errors.NoHealthyEndpoint as exc:  # one endpoint per pool: its own error says more
        return [Check(group, name, "fail", _short(exc.__cause__ or exc), _fix_unreachable(group))]
    except errors.WatcherError as exc:
        return [Check(group, name, "fail", _short(exc), _fix_unreachable(group))]
    except Exception as exc:  # a diagnostic tool reports, it does not crash
        log.exception("doctor_probe_failed", check=name)
        return [Check(group, name, "fail", f"{type(exc).__name__}: {_short(exc)}", "")]


def _fix_unreachable(group: str) -> str:
    return {
        "database": "check DATABASE_URL, that the server runs and accepts this host",
        "stripe": "check outbound HTTPS to api.stripe.com",
    }.get(group, "check the URL, the provider's status and your API key/quota")


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _age_status(age: float, mainnet: bool) -> tuple[Status, str]:
    if age <= 60:
        return "ok", ""
    if not mainnet:
        return "warn", "the head is old: a local chain mines on demand; a real one should not"
    if age <= 300:
        return "warn", "the head is minutes old: the node is lagging; prefer another endpoint"
    return "fail", "the node is stuck or syncing: use another endpoint"


def _latency_status(latency: float) -> tuple[Status, str]:
    if latency > SLOW_SECONDS:
        return "warn", f"slow ({latency:.1f} s): pick an endpoint closer to this host"
    return "ok", ""


def _combine(*pairs: tuple[Status, str]) -> tuple[Status, str]:
    bad = [p for p in pairs if p[0] != "ok"]
    if not bad:
        return "ok", ""
    status: Status = "fail" if any(s == "fail" for s, _ in bad) else "warn"
    return status, "; ".join(f for _, f in bad if f)


# ---- EVM -------------------------------------------------------------------------------------


async def evm_endpoint(
    chain: EvmChain, url: str, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> list[Check]:
    """Reachable, serving the configured chain id, head fresh, latency."""
    name = f"{chain.name} {redact_url(url)}"
    pool = rpc.RpcPool(chain.name, [url], timeout=seconds, transport=transport)
    try:
        started = time.monotonic()
        got = int(await pool.request("eth_chainId"), 16)
        latency = time.monotonic() - started
        if got != chain.chain_id:
            return [
                Check(
                    "rpc",
                    name,
                    "fail",
                    f"chain id {got}, expected {chain.chain_id}",
                    f"this URL serves another network: use a {chain.name} endpoint "
                    f"(or fix {_var(chain.name, 'CHAIN_ID')})",
                )
            ]
        block = await pool.request("eth_getBlockByNumber", ["latest", False])
    finally:
        await pool.aclose()
    number, age = int(block["number"], 16), time.time() - int(block["timestamp"], 16)
    mainnet = chain.chain_id == chain.network.chain_id and not chain.network.testnet
    status, fix = _combine(_age_status(age, mainnet), _latency_status(latency))
    value = f"chain {got}, head {number} ({max(age, 0):.0f} s old), {latency * 1000:.0f} ms"
    return [Check("rpc", name, status, value, fix)]


async def evm_usdc(
    chain: EvmChain, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> list[Check]:
    """The configured USDC address holds a contract whose decimals() is 6."""
    name = f"{chain.name} USDC contract"
    var = _var(chain.name, "USDC_ADDRESS")
    pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, chain_id=chain.chain_id, timeout=seconds, transport=transport
    )
    try:
        code = await pool.request("eth_getCode", [chain.usdc, "latest"])
        if not code or code == "0x":
            fix = f"nothing is deployed there on chain {chain.chain_id}: fix {var}"
            return [Check("contracts", name, "fail", f"{chain.usdc}: no code", fix)]
        raw = await pool.request(
            "eth_call", [{"to": chain.usdc, "data": DECIMALS_SELECTOR}, "latest"]
        )
    finally:
        await pool.aclose()
    decimals = rpc.abi_uint(raw)  # exactly one word: a longer answer is not decimals()
    if decimals != 6:
        fix = f"USDC has 6 decimals: {var} points at another token"
        return [Check("contracts", name, "fail", f"{chain.usdc}: decimals() = {decimals}", fix)]
    return [Check("contracts", name, "ok", f"{chain.usdc}: contract, 6 decimals")]


async def ws_endpoint(chain: str, url: str, chain_id: int | None, seconds: float) -> list[Check]:
    """The websocket endpoint accepts a connection and answers on it: ``eth_chainId`` on EVM,
    a ``slotSubscribe`` on Solana (its PubSub socket serves subscriptions only)."""
    name = f"{chain} {redact_url(url)}"
    method = "eth_chainId" if chain_id is not None else "slotSubscribe"
    started = time.monotonic()
    try:
        async with connect(url, open_timeout=seconds, close_timeout=1) as ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}))
            async with asyncio.timeout(seconds):
                answer = json.loads(await ws.recv())
            if chain_id is None and isinstance(answer, dict) and "result" in answer:
                unsub = {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "slotUnsubscribe",
                    "params": [answer["result"]],
                }
                await ws.send(json.dumps(unsub))
    except (OSError, ValueError, TimeoutError, websockets.WebSocketException) as exc:
        fix = "heads arrive by polling meanwhile (slower); check the ws URL and its key"
        return [Check("rpc", name, "fail", f"websocket: {_short(exc)}", fix)]
    latency = time.monotonic() - started
    result = answer.get("result") if isinstance(answer, dict) else None
    if result is None:
        return [Check("rpc", name, "fail", f"websocket: no {method} answer", "")]
    if chain_id is not None and int(result, 16) != chain_id:
        value = f"websocket serves chain {int(result, 16)}, expected {chain_id}"
        return [Check("rpc", name, "fail", value, "use a websocket URL of the same chain")]
    status, fix = _latency_status(latency)
    return [Check("rpc", name, status, f"websocket ok, {latency * 1000:.0f} ms", fix)]


# ---- Solana ------------------------------------------------------------------------------------


async def solana_endpoint(
    chain: SolanaChain, url: str, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> list[Check]:
    """Reachable, the right cluster for the mint, finalized head fresh, latency."""
    name = f"{chain.name} {redact_url(url)}"
    pool = rpc.RpcPool(chain.name, [url], timeout=seconds, transport=transport, kind="solana")
    try:
        started = time.monotonic()
        genesis = await pool.request("getGenesisHash")
        latency = time.monotonic() - started
        if genesis != chain.genesis_hash:
            row = chain.network
            fix = f"use a {row.title} endpoint (or fix {_var(chain.name, 'GENESIS_HASH')})"
            value = f"cluster genesis {str(genesis)[:8]}…, not {row.title}'s"
            return [Check("rpc", name, "fail", value, fix)]
        slot = int(await pool.request("getSlot", [{"commitment": "finalized"}]))
        try:
            block_time = await pool.request("getBlockTime", [slot])
        except errors.RpcResponseError:
            block_time = None
    finally:
        await pool.aclose()
    if block_time is None:
        age_status: tuple[Status, str] = ("warn", "the node does not report block times")
        age_text = "time unknown"
    else:
        age = time.time() - int(block_time)
        real = chain.usdc_mint == chain.network.usdc and not chain.network.testnet
        age_status = _age_status(age, real)
        age_text = f"{max(age, 0):.0f} s old"
    status, fix = _combine(age_status, _latency_status(latency))
    value = f"finalized slot {slot} ({age_text}), {latency * 1000:.0f} ms"
    return [Check("rpc", name, status, value, fix)]


async def solana_accounts(
    chain: SolanaChain, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> list[Check]:
    """The mint exists with 6 decimals; the owner's associated token account exists."""
    pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, timeout=seconds, transport=transport, kind="solana"
    )
    try:
        mint = await _parsed_account(pool, chain.usdc_mint)
        rows = [_mint_row(chain, mint)]
        if rows[0].status == "fail" or mint is None or chain.owner is None:
            return rows
        ata = associated_token_account(chain.owner, str(mint["owner"]), chain.usdc_mint)
        rows.append(_ata_row(chain, ata, await _parsed_account(pool, ata)))
        return rows
    finally:
        await pool.aclose()


# A settlement costs 5000 lamports a signature (two) plus a capped priority fee, and the fee
# payer must stay rent-exempt (890 880 lamports for a plain account).
FEE_PAYER_FLOOR = 890_880 + 10_000
FEE_PAYER_COMFORT = 10_000_000  # 0.01 SOL: about a thousand settlements


async def solana_fee_payer(
    chain: SolanaChain, fee_payer: str, seconds: float, transport: httpx.AsyncBaseTransport | None
) -> list[Check]:
    """The x402 fee payer (X402_<NETWORK>_FEE_PAYER_PRIVATE_KEY) holds SOL for settlements."""
    pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, timeout=seconds, transport=transport, kind="solana"
    )
    try:
        answer = await pool.request("getBalance", [fee_payer, {"commitment": "confirmed"}])
    finally:
        await pool.aclose()
    lamports = int(answer["value"])
    name = f"{chain.name} x402 fee payer"
    shown = f"{fee_payer}: {lamports / 1e9:.6f} SOL"
    fix = f"send SOL to {fee_payer}; x402 payers get 503 fee_payer_unfunded until then"
    if lamports < FEE_PAYER_FLOOR:
        return [Check("contracts", name, "fail", shown, fix)]
    if lamports < FEE_PAYER_COMFORT:
        return [Check("contracts", name, "warn", shown, f"below 0.01 SOL: {fix}")]
    return [Check("contracts", name, "ok", shown)]


def associated_token_account(owner: str, token_program: str, mint: str) -> str:
    """The owner's associated token account for ``mint`` (the address wallets pay into)."""
    from solders.pubkey import Pubkey

    seeds = [bytes(Pubkey.from_string(k)) for k in (owner, token_program, mint)]
    address, _bump = Pubkey.find_program_address(seeds, Pubkey.from_string(ATA_PROGRAM))
    return str(address)


async def _parsed_account(pool: rpc.RpcPool, address: str) -> dict[str, Any] | None:
    opts = {"encoding": "jsonParsed", "commitment": "finalized"}
    answer = await pool.request("getAccountInfo", [address, opts])
    value = answer.get("value") if isinstance(answer, dict) else None
    return value if isinstance(value, dict) else None


def _parsed(account: dict[str, Any]) -> dict[str, Any]:
    data = account.get("data")
    parsed = data.get("parsed") if isinstance(data, dict) else None
    return parsed if isinstance(parsed, dict) else {}


def _mint_row(chain: SolanaChain, account: dict[str, Any] | None) -> Check:
    mint, var = chain.usdc_mint, _var(chain.name, "USDC_MINT")
    name, fix = f"{chain.name} USDC mint", f"{var} is not a token mint on this cluster"
    if account is None:
        return Check("contracts", name, "fail", f"{mint}: no such account", fix)
    parsed = _parsed(account)
    decimals = parsed.get("info", {}).get("decimals")
    if parsed.get("type") != "mint":
        return Check("contracts", name, "fail", f"{mint}: not a mint", fix)
    if decimals != 6:
        fix = f"USDC has 6 decimals: {var} is another token"
        return Check("contracts", name, "fail", f"{mint}: {decimals} decimals", fix)
    return Check("contracts", name, "ok", f"{mint}: mint, 6 decimals")


def _ata_row(chain: SolanaChain, ata: str, account: dict[str, Any] | None) -> Check:
    name = f"{chain.name} receiving token account"
    if account is None:
        fix = (
            f"create it once: spl-token create-account {chain.usdc_mint} --owner {chain.owner} "
            "(wallets usually create it with the first payment)"
        )
        return Check("contracts", name, "warn", f"{ata}: not created yet", fix)
    info = _parsed(account).get("info", {})
    if info.get("mint") != chain.usdc_mint or info.get("owner") != chain.owner:
        fix = "the derived address holds something else: check the owner and mint"
        return Check("contracts", name, "fail", f"{ata}: not the owner's USDC account", fix)
    return Check("contracts", name, "ok", f"{ata} (owner {chain.owner})")


# ---- database ------------------------------------------------------------------------------


async def database(settings: Settings, seconds: float) -> list[Check]:
    """Reachable and every migration applied."""
    dsn = secret(settings.database_url)
    if dsn is not None:
        return await _database_at(dsn, mask_dsn(dsn), seconds)
    embedded = db.EmbeddedPostgres(settings.watcher_data_dir)
    pgdata = embedded.pgdata
    if not await asyncio.to_thread((pgdata / "PG_VERSION").exists):
        fix = "created on first start; run `watcher migrate` to create it now"
        value = f"embedded, not created yet ({pgdata})"
        return [Check("database", "PostgreSQL", "warn", value, fix)]
    local_dsn = await asyncio.to_thread(embedded.start)
    try:
        return await _database_at(local_dsn, f"embedded ({pgdata})", seconds)
    finally:
        await asyncio.to_thread(embedded.stop)


async def _database_at(dsn: str, shown: str, seconds: float) -> list[Check]:
    try:
        conn = await asyncpg.connect(dsn, timeout=seconds)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise errors.DatabaseError(f"{shown}: {_short(exc)}") from exc
    try:
        version = await conn.fetchval(db.q("server_version"))
        pending = await db.pending_migrations(conn)
    finally:
        await conn.close()
    if pending:
        fix = "run `watcher migrate` (the daemon also migrates on start)"
        value = f"{shown}, PostgreSQL {version}, pending migrations {', '.join(pending)}"
        return [Check("database", "PostgreSQL", "fail", value, fix)]
    value = f"{shown}, PostgreSQL {version}, migrations current"
    return [Check("database", "PostgreSQL", "ok", value)]
