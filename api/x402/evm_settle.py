"""Settle a verified EVM authorization once, and record it where the ledger can see it.

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

Our relayer settles when its key is configured, else the facilitator. The
follower later credits the Transfer log; ``ledger.credit`` links it here. No
database connection is held across an RPC call.
"""

from __future__ import annotations

import structlog
from eth_abi.abi import encode as abi_encode
from eth_utils.abi import function_signature_to_4byte_selector
from x402.mechanisms.evm import constants as evm_errors
from x402.schemas import SettleResponse

from api.errors import ApiError, service_unavailable
from api.x402 import offers, records
from api.x402.clients import Clients
from api.x402.errors import (
    Refused,
    RelayerUnfunded,
    SettlementRejected,
    SettlementUnknown,
)
from api.x402.evm import Verified
from api.x402.relayer import Relayer
from watcher import db, errors, ledger, metrics, rpc

log = structlog.get_logger(__name__)

_BALANCE_OF = function_signature_to_4byte_selector("balanceOf(address)")
VIA = "x402-exact"
RAIL: ledger.X402Rail = "x402_authorizations"


async def settle(
    clients: Clients, pool: db.Pool, verified: Verified, resource: str
) -> records.Settled:
    """Check funds, claim the nonce, settle the payment of ``resource`` (its URL, stored
    with the row); raises Refused (402) or ApiError (503)."""
    name = verified.offer.chain.name
    if verified.offer.family != "evm":  # the paywall sends Solana to api.x402.svm_settle
        raise Refused("invalid_network", f"x402 exact on {name} is settled by api.x402.svm_settle")
    await _check_unused(pool, verified)  # a replay costs one indexed read, no RPC call
    try:
        await _check_balance(clients.settlement_pool(name), verified)
        relayer = clients.relayer_for(name)
        if relayer is None:
            auth_id, tx_hash = await _by_facilitator(clients, pool, verified, resource)
        else:
            auth_id, tx_hash = await _by_relayer(pool, verified, relayer, resource)
    except RelayerUnfunded as exc:
        metrics.X402_SETTLEMENTS.labels(name, "unfunded").inc()
        log.error("x402_relayer_unfunded", chain=name, problem=str(exc))
        raise ApiError(
            503,
            "relayer_unfunded",
            str(exc),
            "the operator must fund the relayer; retry later (nothing was charged)",
            headers={"Retry-After": "60"},
        ) from exc
    except errors.RpcError as exc:
        metrics.X402_SETTLEMENTS.labels(name, "unknown").inc()
        raise service_unavailable(f"the {name} RPC node (x402 settlement)") from exc
    metrics.X402_SETTLEMENTS.labels(name, "settled").inc()
    return _settled(verified, tx_hash, auth_id)


def _settled(verified: Verified, tx_hash: str, authorization_id: int) -> records.Settled:
    req = verified.requirements_json
    response = SettleResponse(
        success=True,
        transaction=tx_hash,
        network=req["network"],
        payer=verified.auth.payer,
        amount=str(verified.auth.value),
    )
    headers = offers.response_header(verified.version, response)
    name = verified.offer.chain.name
    return records.Settled(authorization_id, tx_hash, headers, VIA, verified.auth.payer, name)


def _failed(verified: Verified, reason: str, message: str, tx_hash: str = "") -> Refused:
    return offers.failure(
        verified.version,
        verified.requirements_json,
        verified.auth.payer,
        reason,
        message,
        tx_hash,
    )


async def _check_unused(pool: db.Pool, verified: Verified) -> None:
    a, c = verified.auth, verified.offer.chain
    nonce = "0x" + a.nonce.hex()
    if await records.db_value(pool, "x402_nonce_seen", c.name, c.asset, a.payer, nonce):
        raise Refused(
            evm_errors.ERR_NONCE_ALREADY_USED, "this authorization's nonce was already used"
        )


async def _check_balance(rpc_pool: rpc.RpcPool, verified: Verified) -> None:
    data = "0x" + (_BALANCE_OF + abi_encode(["address"], [verified.auth.payer])).hex()
    call = {"to": verified.offer.chain.asset, "data": data}
    balance = rpc.abi_uint(await rpc_pool.request("eth_call", [call, "latest"]))
    if balance is None:  # no token contract there, or not an ERC-20 answer: do not settle
        raise service_unavailable(f"the {verified.offer.chain.name} USDC contract (balanceOf)")
    if balance < verified.auth.value:
        raise Refused(
            evm_errors.ERR_INSUFFICIENT_BALANCE,
            f"the payer holds {balance} base units; the authorization is for {verified.auth.value}",
        )


async def _by_relayer(
    pool: db.Pool, verified: Verified, relayer: Relayer, resource: str
) -> tuple[int, str]:
    try:
        prepared = await relayer.prepare(verified.offer.chain.asset, verified.auth)
    except SettlementRejected as exc:
        raise Refused(exc.reason, str(exc)) from exc
    auth_id = await _claim(pool, verified, "relayer", resource)
    try:
        receipt = await relayer.submit(prepared, pool, auth_id)
    except (SettlementUnknown, errors.RpcError) as exc:
        await _fail(pool, verified, auth_id, f"not confirmed: {exc}")
        raise service_unavailable("settlement (the transaction was not confirmed in time)") from exc
    except Exception as exc:  # a bug must not leave the nonce claimed as 'verified' forever
        await _fail(pool, verified, auth_id, f"settlement crashed: {exc!r}")
        raise
    tx_hash = str(receipt["transactionHash"]).lower()
    if receipt.get("status") != "0x1":
        await _fail(pool, verified, auth_id, f"transaction {tx_hash} reverted")
        raise _failed(
            verified,
            evm_errors.ERR_TRANSACTION_FAILED,
            f"the settlement {tx_hash} reverted",
            tx_hash,
        )
    await _mark_settled(pool, auth_id, tx_hash)
    return auth_id, tx_hash


async def _by_facilitator(
    clients: Clients, pool: db.Pool, verified: Verified, resource: str
) -> tuple[int, str]:
    body = {
        "x402Version": verified.version,
        "paymentPayload": verified.raw_payload,
        "paymentRequirements": verified.requirements_json,
    }
    facilitator = clients.facilitator_client()
    try:
        checked = await facilitator.verify(body)
    except SettlementUnknown as exc:
        raise service_unavailable("the x402 facilitator") from exc
    if not checked.is_valid:
        raise Refused(checked.invalid_reason or "invalid_payload", "the facilitator refused")
    auth_id = await _claim(pool, verified, "facilitator", resource)
    try:
        done = await facilitator.settle(body)
    except SettlementUnknown as exc:
        await _fail(pool, verified, auth_id, str(exc))
        raise service_unavailable("the x402 facilitator") from exc
    if not done.success or not done.transaction:
        await _fail(pool, verified, auth_id, done.error_reason or "facilitator settle failed")
        reason = done.error_reason or evm_errors.ERR_TRANSACTION_FAILED
        raise _failed(verified, reason, done.error_message or "the facilitator could not settle")
    tx_hash = done.transaction.lower()
    await _mark_settled(pool, auth_id, tx_hash)
    return auth_id, tx_hash


async def _claim(pool: db.Pool, verified: Verified, settled_by: str, resource: str) -> int:
    a = verified.auth
    auth_id = await records.db_value(
        pool,
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
        resource,
        settled_by,
    )
    if auth_id is None:
        raise Refused(
            evm_errors.ERR_NONCE_ALREADY_USED, "this authorization's nonce was already used"
        )
    return int(auth_id)


async def _mark_settled(pool: db.Pool, auth_id: int, tx_hash: str) -> None:
    served = await records.in_db(
        pool, lambda conn: mark_settled(conn, auth_id, tx_hash), "mark_settled"
    )
    if not served:  # failed meanwhile, or its payment was claimed for a token first
        await records.mark_failed(
            pool, RAIL, "x402_mark_failed", auth_id, "not served: payment consumed"
        )
        raise service_unavailable("settlement bookkeeping")  # not ours to serve any more


async def mark_settled(conn: db.Connection, auth_id: int, tx_hash: str) -> bool:
    """``settled`` with the follower's payment, if any, consumed (see
    :func:`records.settle_row`)."""
    return await records.settle_row(
        conn,
        ("x402_begin_settled", "x402_settled_payment", "x402_authorizations"),
        (auth_id, tx_hash),
        lambda r: (r["payment_id"], r["chain"], tx_hash, r["payer"], r["pay_to"], r["asset"]),
        auth_id,
    )


async def _fail(pool: db.Pool, verified: Verified, auth_id: int, why: str) -> None:
    metrics.X402_SETTLEMENTS.labels(verified.offer.chain.name, "failed").inc()
    try:
        await records.mark_failed(pool, RAIL, "x402_mark_failed", auth_id, why[:500])
    except ApiError:
        log.error("x402_mark_failed_lost", authorization_id=auth_id, why=why)
