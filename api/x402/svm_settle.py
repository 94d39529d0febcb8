"""Settle a verified Solana payment: co-sign, simulate, claim, broadcast, poll.

:func:`settle` checks the nonce and message are not known and our fee payer
can pay, co-signs and simulates; the settlement row is claimed (unique per
mint, payer and nonce, and per message; one in flight per source token
account, none for a source whose payment failed on chain within the hour)
before the transaction is broadcast; the call is served once the transaction
is ``confirmed`` without error. The Solana follower credits the transfer at
``finalized``, and ``ledger.credit`` links it to the settlement in that
transaction.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import structlog
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.transaction import VersionedTransaction
from x402.mechanisms.svm import constants as svm
from x402.schemas import SettleResponse

from api.errors import ApiError, service_unavailable
from api.x402 import offers, records
from api.x402.clients import Clients
from api.x402.errors import FeePayerUnfunded, Refused
from api.x402.svm_decode import SvmVerified
from watcher import db, errors, ledger, metrics, rpc

log = structlog.get_logger(__name__)

# Our own reasons where the spec has none (documented in docs/x402.md).
ERR_FEE_PAYER_UNFUNDED = "fee_payer_unfunded"
ERR_SOURCE_REFUSED = "invalid_exact_svm_payload_source_failed_recently"
ERR_SETTLEMENT_PENDING = svm.ERR_SETTLEMENT_PENDING
VIA = "x402-exact-solana"
RAIL: ledger.X402Rail = "x402_solana_settlements"

RENT_EXEMPT_MINIMUM = 890_880  # a fee payer must stay rent-exempt after paying
POLL_SECONDS = 0.5
REBROADCAST_SECONDS = 2.0


async def settle(
    clients: Clients, pool: db.Pool, verified: SvmVerified, resource: str
) -> records.Settled:
    """Co-sign, simulate, claim, broadcast and await confirmation of the payment of
    ``resource`` (its URL, stored with the row); raises Refused or ApiError."""
    settings = clients.settings
    t, name = verified.transfer, verified.matched.offer.chain.name
    if await records.db_value(
        pool, "x402_svm_nonce_seen", t.mint, t.payer, verified.nonce, verified.message_hash
    ):
        raise Refused(svm.ERR_DUPLICATE_SETTLEMENT, "this payment's nonce was already used")
    secret = settings.solana_fee_payer_secret(name)
    assert secret is not None  # an offer exists only with the key
    signed = co_sign(verified.tx, Keypair.from_bytes(secret))
    try:
        rpc_pool = clients.settlement_pool(name)
        await _check_funds(rpc_pool, str(signed.message.account_keys[0]), verified.fee)
        await _simulate(rpc_pool, signed)
        settlement_id = await _claim(pool, verified, signed, resource)
        await _broadcast(clients, pool, signed, verified, settlement_id)
    except FeePayerUnfunded as exc:
        metrics.X402_SETTLEMENTS.labels(name, "unfunded").inc()
        log.error("x402_fee_payer_unfunded", chain=name, problem=str(exc))
        raise ApiError(
            503,
            ERR_FEE_PAYER_UNFUNDED,
            str(exc),
            "the operator must fund the Solana fee payer; retry later (nothing was charged)",
            headers={"Retry-After": "60"},
        ) from exc
    except errors.RpcError as exc:  # before the claim: nothing sent, nothing charged
        metrics.X402_SETTLEMENTS.labels(name, "unknown").inc()
        raise service_unavailable(f"the {name} RPC node (x402 settlement)") from exc
    metrics.X402_SETTLEMENTS.labels(name, "settled").inc()
    signature = str(signed.signatures[0])
    response = SettleResponse(
        success=True,
        transaction=signature,
        network=verified.matched.requirements_json["network"],
        payer=t.payer,
        amount=str(t.amount),
    )
    headers = offers.response_header(verified.matched.version, response)
    return records.Settled(settlement_id, signature, headers, VIA, t.payer, name)


def co_sign(tx: VersionedTransaction, fee_payer: Keypair) -> VersionedTransaction:
    """The payer's transaction with our fee payer signature in slot 0 (its id)."""
    ours = fee_payer.sign_message(to_bytes_versioned(tx.message))
    return VersionedTransaction.populate(tx.message, [ours, *list(tx.signatures)[1:]])


def _b64(tx: VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


async def _check_funds(rpc_pool: rpc.RpcPool, fee_payer: str, fee: int) -> None:
    result = await rpc_pool.request("getBalance", [fee_payer, {"commitment": "confirmed"}])
    balance = int(result["value"])
    need = fee + RENT_EXEMPT_MINIMUM
    if balance < need:
        raise FeePayerUnfunded(
            f"the Solana fee payer {fee_payer} holds {balance} lamports; a settlement needs "
            f"{need} (the {fee} lamport fee, and it must stay rent-exempt)"
        )


async def _simulate(rpc_pool: rpc.RpcPool, signed: VersionedTransaction) -> None:
    config = {"encoding": "base64", "sigVerify": True, "commitment": "confirmed"}
    result = await rpc_pool.request("simulateTransaction", [_b64(signed), config])
    value = result.get("value") or {}
    if value.get("err") is not None:
        logs = [str(line) for line in value.get("logs") or []][-3:]
        tail = f" ({'; '.join(logs)})" if logs else ""
        why = f"the transaction would fail: {value['err']}{tail}"
        raise Refused(svm.ERR_SIMULATION_FAILED, why)


async def _claim(pool: db.Pool, v: SvmVerified, signed: VersionedTransaction, resource: str) -> int:
    """Claim the settlement row, one in flight per source token account."""
    t, m = v.transfer, v.matched
    args = (
        m.offer.requirements.network,
        t.mint,
        t.payer,
        t.source,
        m.offer.requirements.pay_to,
        t.destination,
        t.amount,
        v.nonce,
        v.message_hash,
        str(signed.signatures[0]),
        str(signed.message.account_keys[0]),
        m.version,
        resource,
    )

    async def claim(conn: db.Connection) -> tuple[str | None, int | None]:
        async with conn.transaction():
            await conn.execute(db.q("x402_svm_lock_source"), t.source)
            busy = await conn.fetchval(db.q("x402_svm_source_busy"), t.source)
            if busy is not None:
                return busy, None
            return None, await conn.fetchval(db.q("x402_svm_claim"), *args)

    busy, settlement_id = await records.in_db(pool, claim, "x402_svm_claim")
    if busy == "settling":
        raise Refused(
            ERR_SETTLEMENT_PENDING,
            f"another payment from token account {t.source} is being settled; "
            "pay again in a few seconds",
        )
    if busy == "failed_on_chain":
        raise Refused(
            ERR_SOURCE_REFUSED,
            f"a payment from token account {t.source} failed on chain within the hour; "
            "pay from another account or later",
        )
    if settlement_id is None:
        raise Refused(svm.ERR_DUPLICATE_SETTLEMENT, "this payment's nonce was already used")
    return int(settlement_id)


async def _broadcast(
    clients: Clients,
    pool: db.Pool,
    signed: VersionedTransaction,
    v: SvmVerified,
    settlement_id: int,
) -> None:
    """Send, then poll until confirmed; resend while the blockhash lives.

    Only what is certain becomes ``failed``: a refusal by the node's preflight, an error
    on chain, a blockhash that expired with the transaction nowhere. Anything else
    (no answer in time, the RPC node failing while we poll) leaves the row
    ``settling`` and is a 503: never served, and if the transfer lands anyway it is
    an ordinary credited payment the payer can claim.
    """
    rpc_pool = clients.settlement_pool(v.matched.offer.chain.name)
    signature, raw = str(signed.signatures[0]), _b64(signed)
    await _send(rpc_pool, pool, raw, signature, v, settlement_id)
    try:
        outcome, status = await _await_status(
            rpc_pool, signed, raw, clients.settings.x402_settle_timeout_seconds
        )
    except errors.RpcError as exc:
        log.warning("x402_svm_status_unknown", signature=signature, error=str(exc))
        outcome, status = "pending", None
    if outcome == "pending":
        metrics.X402_SETTLEMENTS.labels(v.matched.offer.chain.name, "unknown").inc()
        raise _pending(v, signature)
    if outcome == "expired":
        await _fail(pool, v, settlement_id, f"blockhash expired; {signature} never landed")
        raise _failed(
            v,
            svm.ERR_TRANSACTION_FAILED,
            "the transaction expired before it landed; nothing was charged, pay again",
            signature,
        )
    err = (status or {}).get("err")
    if err is not None:
        await _fail(pool, v, settlement_id, f"{signature} failed on chain: {err}", on_chain=True)
        raise _failed(
            v, svm.ERR_TRANSACTION_FAILED, f"the settlement {signature} failed: {err}", signature
        )
    served = await records.in_db(
        pool, lambda conn: mark_settled(conn, settlement_id), "x402_svm_mark_settled"
    )
    if not served:
        await _fail(pool, v, settlement_id, "its payment was claimed for an access token first")
        raise service_unavailable("settlement bookkeeping")  # not ours to serve any more


async def _send(
    rpc_pool: rpc.RpcPool,
    pool: db.Pool,
    raw: str,
    signature: str,
    v: SvmVerified,
    settlement_id: int,
) -> None:
    """The first send, with preflight: a certain refusal is ``failed`` (402)."""
    send_config = {"encoding": "base64", "preflightCommitment": "confirmed", "maxRetries": 0}
    try:
        await rpc_pool.request("sendTransaction", [raw, send_config])
    except errors.RpcResponseError as exc:
        # "already processed": a retried send found the first one. Otherwise a refusal,
        # unless an earlier attempt the pool retried got it out through another node.
        if "already been processed" not in str(exc) and not await _seen(rpc_pool, signature):
            await _fail(pool, v, settlement_id, f"refused by the node: {exc}")
            raise _failed(v, svm.ERR_TRANSACTION_FAILED, f"the node refused it: {exc}") from exc
    except errors.RpcError as exc:
        log.warning("x402_svm_send_uncertain", signature=signature, error=str(exc))


async def mark_settled(conn: db.Connection, settlement_id: int) -> bool:
    """``settling`` -> ``settled`` with the follower's payment, if any, consumed; False
    (and nothing changed) when the call must not be served: the row is no longer
    ``settling``, or its payment was already claimed for an access token."""
    return await records.settle_row(
        conn,
        ("x402_svm_begin_settled", "x402_svm_settled_payment", "x402_solana_settlements"),
        (settlement_id,),
        lambda r: (r["payment_id"], r["signature"], r["destination"], r["pay_to"], r["mint"]),
        settlement_id,
    )


async def _await_status(
    rpc_pool: rpc.RpcPool, signed: VersionedTransaction, raw: str, seconds: float
) -> tuple[str, dict[str, Any] | None]:
    """``confirmed`` with its status (``err`` set when it failed on chain), ``expired``
    (the blockhash is too old and the transaction is nowhere), or ``pending``."""
    signature = str(signed.signatures[0])
    blockhash = str(signed.message.recent_blockhash)
    deadline = time.monotonic() + seconds
    last_send = time.monotonic()
    while True:
        status = await _status(rpc_pool, signature, history=False)
        if status and status.get("confirmationStatus") in ("confirmed", "finalized"):
            return "confirmed", status
        if time.monotonic() >= deadline:
            return "pending", None
        if status is None and time.monotonic() - last_send >= REBROADCAST_SECONDS:
            params = [blockhash, {"commitment": "processed"}]
            if not (await rpc_pool.request("isBlockhashValid", params)).get("value"):
                if await _status(rpc_pool, signature, history=True) is None:
                    return "expired", None  # too old to land, and it did not
            else:
                last_send = time.monotonic()
                await _rebroadcast(rpc_pool, raw, signature)
        await asyncio.sleep(POLL_SECONDS)


async def _rebroadcast(rpc_pool: rpc.RpcPool, raw: str, signature: str) -> None:
    again = {"encoding": "base64", "skipPreflight": True, "maxRetries": 0}
    try:
        await rpc_pool.request("sendTransaction", [raw, again])
    except errors.RpcError as exc:
        log.info("x402_svm_rebroadcast_failed", signature=signature, error=str(exc))


async def _seen(rpc_pool: rpc.RpcPool, signature: str) -> bool:
    """Whether any node we ask knows the transaction; unknown (the RPC failing) counts as
    seen: the caller then waits for a certain answer instead of declaring a failure."""
    try:
        return await _status(rpc_pool, signature, history=True) is not None
    except errors.RpcError:
        return True


async def _status(rpc_pool: rpc.RpcPool, signature: str, *, history: bool) -> dict[str, Any] | None:
    config = {"searchTransactionHistory": history}
    result = await rpc_pool.request("getSignatureStatuses", [[signature], config])
    status = (result.get("value") or [None])[0]
    return dict(status) if isinstance(status, dict) else None


def _pending(v: SvmVerified, signature: str) -> ApiError:
    """No certain answer in time: 503 with the signature; the call was not served."""
    why = "not confirmed in time; if it lands it is a payment you can claim"
    pending = _failed(v, ERR_SETTLEMENT_PENDING, why, signature)
    return ApiError(
        503,
        ERR_SETTLEMENT_PENDING,
        f"the settlement {signature} was not confirmed in time; the call was not served",
        "if the transfer lands, claim it for an access token with POST /x402/generate-token "
        "(the payment is yours); otherwise pay again",
        headers={**pending.headers, "Retry-After": "30"},
    )


def _failed(v: SvmVerified, reason: str, message: str, signature: str = "") -> Refused:
    m = v.matched
    return offers.failure(
        m.version, m.requirements_json, v.transfer.payer, reason, message, signature
    )


async def _fail(
    pool: db.Pool, v: SvmVerified, settlement_id: int, why: str, *, on_chain: bool = False
) -> None:
    metrics.X402_SETTLEMENTS.labels(v.matched.offer.chain.name, "failed").inc()
    try:
        await records.mark_failed(
            pool, RAIL, "x402_svm_mark_failed", settlement_id, why[:500], on_chain
        )
    except ApiError:
        log.error("x402_svm_mark_failed_lost", settlement_id=settlement_id, why=why)
