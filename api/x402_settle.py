"""Settle a verified x402 authorization once, and record it where the ledger can see it.

Order matters for money:

1. the payer's balance (``eth_call balanceOf``) and, with the relayer, a
   simulation of ``transferWithAuthorization`` plus the relayer's gas money;
   an unfunded relayer is a 503 naming the account, and nothing is claimed;
2. the nonce row is claimed in ``x402_authorizations`` (unique per chain,
   token, payer, nonce): a replay or a concurrent twin gets no row and is
   refused before any transaction exists;
3. the transaction hash is recorded (``settling``) before it is broadcast, the
   receipt awaited; status 1 is ``settled`` and only then is the call served.
   A revert or a missing receipt is ``failed``: never served, never counted.

The follower later credits the Transfer log; ``ledger.credit`` links it here.
No database connection is held across an RPC call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_signature_to_4byte_selector
from fastapi import Request
from x402.mechanisms.evm import constants as evm_errors
from x402.schemas import SettleResponse

from api import x402_standard
from api.errors import ApiError, service_unavailable
from api.x402_standard import Refused, Verified
from watcher import db, errors, ledger, metrics, rpc, settle
from watcher.settings import Settings

log = structlog.get_logger(__name__)

RPC_TIMEOUT_SECONDS = 10.0
_BALANCE_OF = function_signature_to_4byte_selector("balanceOf(address)")
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Settled:
    """A settled authorization: the call may be served once."""

    authorization_id: int
    tx_hash: str
    headers: dict[str, str]


async def settle_payment(request: Request, verified: Verified) -> Settled:
    """Check funds, claim the nonce, settle; raises Refused (402) or ApiError (503)."""
    settings: Settings = request.app.state.settings
    name = verified.offer.chain.name
    if name == "solana":  # the paywall sends Solana payments to api/x402_svm.py
        raise Refused("invalid_network", "x402 exact on solana is settled by api.x402_svm")
    chain = settings.evm_chain(name)
    await _check_unused(request, verified)  # a replay costs one indexed read, no RPC client
    pool = rpc.RpcPool(
        chain.name,
        chain.rpc_urls,
        chain_id=chain.chain_id,
        timeout=RPC_TIMEOUT_SECONDS,
        transport=settle.http_transport(),
    )
    try:
        await _check_balance(pool, verified)
        auth_id, tx_hash = await _settle_with(request, verified, pool)
    except settle.RelayerUnfunded as exc:
        metrics.X402_SETTLEMENTS.labels(chain.name, "unfunded").inc()
        log.error("x402_relayer_unfunded", chain=chain.name, problem=str(exc))
        raise ApiError(
            503,
            "relayer_unfunded",
            str(exc),
            "the operator must fund the relayer; retry later (nothing was charged)",
            headers={"Retry-After": "60"},
        ) from exc
    except errors.RpcError as exc:
        metrics.X402_SETTLEMENTS.labels(chain.name, "unknown").inc()
        raise service_unavailable(f"the {chain.name} RPC node (x402 settlement)") from exc
    finally:
        await pool.aclose()
    metrics.X402_SETTLEMENTS.labels(chain.name, "settled").inc()
    return _settled(verified, tx_hash, auth_id)


async def _settle_with(request: Request, verified: Verified, pool: rpc.RpcPool) -> tuple[int, str]:
    """Our relayer when its key is configured, else the facilitator."""
    settings: Settings = request.app.state.settings
    key = settings.relayer_key()
    if key is None:
        return await _by_facilitator(request, verified)
    relayer = settle.Relayer(
        key,
        pool,
        verified.offer.chain.chain_id or 0,
        receipt_timeout=settings.x402_settle_timeout_seconds,
        lock=_relayer_lock(request, verified.offer.chain.name),
    )
    return await _by_relayer(request, verified, relayer)


def _settled(verified: Verified, tx_hash: str, authorization_id: int) -> Settled:
    req = verified.requirements_json
    response = SettleResponse(
        success=True,
        transaction=tx_hash,
        network=req["network"],
        payer=verified.auth.payer,
        amount=str(verified.auth.value),
    )
    return Settled(
        authorization_id, tx_hash, x402_standard.response_header(verified.version, response)
    )


def _failed(verified: Verified, reason: str, message: str, tx_hash: str = "") -> Refused:
    return x402_standard.failure(
        verified.version,
        verified.requirements_json,
        verified.auth.payer,
        reason,
        message,
        tx_hash,
    )


def _relayer_lock(request: Request, chain: str) -> asyncio.Lock:
    """One lock per app and chain: the relayer's account nonces are taken in order."""
    state = request.app.state
    if not hasattr(state, "x402_relayer_locks"):
        state.x402_relayer_locks = {}
    locks: dict[str, asyncio.Lock] = state.x402_relayer_locks
    return locks.setdefault(chain, asyncio.Lock())


async def _check_unused(request: Request, verified: Verified) -> None:
    a, c = verified.auth, verified.offer.chain
    if await db_value(request, "x402_nonce_seen", c.name, c.asset, a.payer, "0x" + a.nonce.hex()):
        raise Refused(
            evm_errors.ERR_NONCE_ALREADY_USED, "this authorization's nonce was already used"
        )


async def _check_balance(pool: rpc.RpcPool, verified: Verified) -> None:
    data = "0x" + (_BALANCE_OF + abi_encode(["address"], [verified.auth.payer])).hex()
    call = {"to": verified.offer.chain.asset, "data": data}
    balance = rpc.abi_uint(await pool.request("eth_call", [call, "latest"]))
    if balance is None:  # no token contract there, or not an ERC-20 answer: do not settle
        raise service_unavailable(f"the {verified.offer.chain.name} USDC contract (balanceOf)")
    if balance < verified.auth.value:
        raise Refused(
            evm_errors.ERR_INSUFFICIENT_BALANCE,
            f"the payer holds {balance} base units; the authorization is for {verified.auth.value}",
        )


async def _by_relayer(
    request: Request, verified: Verified, relayer: settle.Relayer
) -> tuple[int, str]:
    try:
        prepared = await relayer.prepare(verified.offer.chain.asset, verified.auth)
    except settle.SettlementRejected as exc:
        raise Refused(exc.reason, str(exc)) from exc
    auth_id = await _claim(request, verified, "relayer")

    async def on_hash(tx_hash: str) -> None:
        await db_value(request, "x402_mark_settling", auth_id, tx_hash)

    try:
        receipt = await relayer.submit(prepared, on_hash)
    except (settle.SettlementUnknown, errors.RpcError) as exc:
        await _fail(request, verified, auth_id, f"not confirmed: {exc}")
        raise service_unavailable("settlement (the transaction was not confirmed in time)") from exc
    except Exception as exc:  # a bug must not leave the nonce claimed as 'verified' forever
        await _fail(request, verified, auth_id, f"settlement crashed: {exc!r}")
        raise
    tx_hash = str(receipt["transactionHash"]).lower()
    if receipt.get("status") != "0x1":
        await _fail(request, verified, auth_id, f"transaction {tx_hash} reverted")
        raise _failed(
            verified,
            evm_errors.ERR_TRANSACTION_FAILED,
            f"the settlement {tx_hash} reverted",
            tx_hash,
        )
    await _mark_settled(request, auth_id, tx_hash)
    return auth_id, tx_hash


async def _by_facilitator(request: Request, verified: Verified) -> tuple[int, str]:
    settings: Settings = request.app.state.settings
    body = {
        "x402Version": verified.version,
        "paymentPayload": verified.raw_payload,
        "paymentRequirements": verified.requirements_json,
    }
    facilitator = settle.Facilitator(settings.x402_facilitator_url or "")
    try:
        try:
            checked = await facilitator.verify(body)
        except settle.SettlementUnknown as exc:
            raise service_unavailable("the x402 facilitator") from exc
        if not checked.is_valid:
            raise Refused(checked.invalid_reason or "invalid_payload", "the facilitator refused")
        auth_id = await _claim(request, verified, "facilitator")
        try:
            done = await facilitator.settle(body)
        except settle.SettlementUnknown as exc:
            await _fail(request, verified, auth_id, str(exc))
            raise service_unavailable("the x402 facilitator") from exc
    finally:
        await facilitator.aclose()
    if not done.success or not done.transaction:
        await _fail(request, verified, auth_id, done.error_reason or "facilitator settle failed")
        reason = done.error_reason or evm_errors.ERR_TRANSACTION_FAILED
        raise _failed(verified, reason, done.error_message or "the facilitator could not settle")
    tx_hash = done.transaction.lower()
    await _mark_settled(request, auth_id, tx_hash)
    return auth_id, tx_hash


async def _claim(request: Request, verified: Verified, settled_by: str) -> int:
    a = verified.auth
    auth_id = await db_value(
        request,
        "x402_claim_authorization",
        verified.offer.chain.name,
        verified.offer.chain.asset,
        a.payer,
        a.pay_to,
        a.value,
        "0x" + a.nonce.hex(),
        a.valid_after,
        a.valid_before,
        "0x" + a.signature.hex(),
        verified.version,
        str(request.url),
        settled_by,
    )
    if auth_id is None:
        raise Refused(
            evm_errors.ERR_NONCE_ALREADY_USED, "this authorization's nonce was already used"
        )
    return int(auth_id)


async def _mark_settled(request: Request, auth_id: int, tx_hash: str) -> None:
    pool: db.Pool = request.app.state.pool
    try:
        async with asyncio.timeout(5.0), pool.acquire() as conn:
            served = await mark_settled(conn, auth_id, tx_hash)
    except _DB_ERRORS as exc:
        log.warning("x402_db_error", query="mark_settled", error=repr(exc))
        raise service_unavailable("the payment database") from exc
    if not served:  # failed meanwhile, or its payment was claimed for a token first
        await db_value(request, "x402_mark_failed", auth_id, "not served: payment consumed")
        raise service_unavailable("settlement bookkeeping")  # not ours to serve any more


async def mark_settled(conn: db.Connection, auth_id: int, tx_hash: str) -> bool:
    """``settled`` with the follower's payment, if any, consumed (see :func:`settle_row`)."""
    return await settle_row(
        conn,
        ("x402_begin_settled", "x402_settled_payment", "x402_authorizations"),
        (auth_id, tx_hash),
        lambda r: (r["payment_id"], r["chain"], tx_hash, r["payer"], r["pay_to"], r["asset"]),
        auth_id,
    )


async def settle_row(
    conn: db.Connection,
    queries: tuple[str, str, ledger.X402Rail],
    begin_args: tuple[Any, ...],
    payment_key: Callable[[asyncpg.Record], tuple[Any, ...]],
    row_id: int,
) -> bool:
    """One transaction: mark the row settled (``queries[0]``, its lock held), re-read the
    follower's payment under lock in a fresh snapshot (``queries[1]`` with
    ``payment_key(row)`` and the amount), and consume it if credited (``ledger.claim_served``
    for the rail ``queries[2]``).
    False, with everything rolled back, when the call must not be served: the row was no
    longer open, or its payment was already claimed for an access token. A payment not
    credited yet (or none) is left to ``ledger.credit``, which finds the row settled."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(db.q(queries[0]), *begin_args)
            if row is None:
                return False
            payment = await conn.fetchrow(db.q(queries[1]), *payment_key(row), row["amount"])
            if payment is None or payment["state"] not in ("credited", "claimed"):
                return True
            if payment["state"] == "credited" and await ledger.claim_served(
                conn, queries[2], row_id, payment["id"]
            ):
                return True
            raise _Consumed  # rolls the transaction back
    except _Consumed:
        return False


class _Consumed(Exception):
    """The payment was consumed elsewhere: roll back, do not serve."""


async def _fail(request: Request, verified: Verified, auth_id: int, why: str) -> None:
    metrics.X402_SETTLEMENTS.labels(verified.offer.chain.name, "failed").inc()
    try:
        await db_value(request, "x402_mark_failed", auth_id, why[:500])
    except ApiError:
        log.error("x402_mark_failed_lost", authorization_id=auth_id, why=why)


async def db_value(request: Request, query: str, *args: Any) -> Any:
    """One named query's first value, within 5 s; a database failure is a 503."""
    pool: db.Pool = request.app.state.pool
    try:
        async with asyncio.timeout(5.0):
            return await pool.fetchval(db.q(query), *args)
    except _DB_ERRORS as exc:
        log.warning("x402_db_error", query=query, error=repr(exc))
        raise service_unavailable("the payment database") from exc
