"""Standard x402 on Solana: the ``exact`` scheme, with us as the fee payer.

The payer's x402 client builds a transaction whose fee payer is our key
(``extra.feePayer`` in the 402), signs it as the transfer's authority and
sends it base64-encoded in the payment header, our signature slot left empty.
Before anything is served we check, offline and in this order, each refusal
naming the x402 reason:

* it decodes, has no address lookup tables and exactly two signers: our fee
  payer first, then the payer;
* the instructions are SetComputeUnitLimit, SetComputeUnitPrice,
  TransferChecked, then at most one memo (its text is the nonce); the
  Lighthouse assertions the spec also allows are refused (see ``_optional``);
* the priority fee (units x price) stays under our cap, so a payer cannot
  make us pay more in fees than the call earns;
* our fee payer appears in no instruction: it pays the fee and nothing else;
* the transfer moves exactly the price of the configured mint (6 decimals)
  into our owner's associated token account, and the payer's signature
  verifies over the message.

Then :func:`settle`: the nonce and message are not known, our fee payer can
pay, we co-sign and simulate; the settlement row is claimed (unique per
mint, payer and nonce, and per message; one in flight per source token
account, none for a source whose payment failed on chain within the hour)
before the transaction is broadcast; the call is served once the
transaction is ``confirmed`` without error. The Solana follower credits the
transfer at ``finalized``, and ``ledger.credit`` links it to the settlement
in that transaction.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from fastapi import Request
from solders.instruction import CompiledInstruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from x402.mechanisms.svm import constants as svm
from x402.mechanisms.svm.utils import derive_ata
from x402.schemas import SettleResponse

from api import text as api_text
from api import x402_settle, x402_standard
from api.errors import DB_ERRORS, ApiError, service_unavailable
from api.x402_settle import Settled
from api.x402_standard import Matched, Refused
from watcher import db, errors, metrics, rpc
from watcher import settle as evm_settle
from watcher.settings import USDC_DECIMALS, Settings

log = structlog.get_logger(__name__)

COMPUTE_BUDGET = Pubkey.from_string(svm.COMPUTE_BUDGET_PROGRAM_ADDRESS)
TOKEN_PROGRAMS = (
    Pubkey.from_string(svm.TOKEN_PROGRAM_ADDRESS),
    Pubkey.from_string(svm.TOKEN_2022_PROGRAM_ADDRESS),
)
MEMO = Pubkey.from_string(svm.MEMO_PROGRAM_ADDRESS)
OPTIONAL_REASONS = (
    svm.ERR_UNKNOWN_FOURTH_INSTRUCTION,
    svm.ERR_UNKNOWN_FIFTH_INSTRUCTION,
    svm.ERR_UNKNOWN_SIXTH_INSTRUCTION,
)
# Our own reasons where the spec has none (documented in docs/x402.md).
ERR_AMOUNT_MISMATCH = "invalid_exact_svm_payload_amount_mismatch"
ERR_SIGNATURE = "invalid_exact_svm_payload_signature"
ERR_FEE_PAYER_UNFUNDED = "fee_payer_unfunded"
ERR_SOURCE_REFUSED = "invalid_exact_svm_payload_source_failed_recently"
ERR_SETTLEMENT_PENDING = svm.ERR_SETTLEMENT_PENDING
T = TypeVar("T")

MAX_TRANSACTION_BYTES = 1232  # a Solana packet
LAMPORTS_PER_SIGNATURE = 5_000
RENT_EXEMPT_MINIMUM = 890_880  # a fee payer must stay rent-exempt after paying
RPC_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.5
REBROADCAST_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Transfer:
    """The TransferChecked of a payment transaction, as read from the message."""

    payer: str  # the authority that signed it
    source: str
    destination: str
    mint: str
    amount: int


@dataclass(frozen=True, slots=True)
class SvmVerified:
    """A Solana payment transaction that passed every offline check."""

    matched: Matched
    tx: VersionedTransaction  # as the payer signed it, our signature slot empty
    transfer: Transfer
    nonce: str  # the memo, or ``msg:<message hash>`` without one
    message_hash: str
    priority_fee: int  # lamports

    @property
    def fee(self) -> int:
        return LAMPORTS_PER_SIGNATURE * len(self.tx.signatures) + self.priority_fee


# ---- offline checks ----------------------------------------------------------------


def verify(settings: Settings, matched: Matched) -> SvmVerified:
    """Check the payer's transaction against our offer; raises :class:`Refused`."""
    offer = matched.offer
    fee_payer = Pubkey.from_string(offer.requirements.extra["feePayer"])
    tx = _decode(matched.payload.get("payload"))
    message = tx.message
    if isinstance(message, MessageV0) and message.address_table_lookups:
        raise Refused(
            svm.ERR_INVALID_PAYLOAD,
            "address lookup tables are not accepted: list every account in the message",
        )
    keys = list(message.account_keys)
    if not keys or keys[0] != fee_payer:
        raise Refused(
            svm.ERR_FEE_PAYER_NOT_MANAGED,
            f"the transaction's fee payer must be ours ({fee_payer}); pay the 402 again",
        )
    ixs = list(message.instructions)
    if not 3 <= len(ixs) <= 6:
        raise Refused(
            svm.ERR_INVALID_INSTRUCTION_COUNT,
            f"{len(ixs)} instructions; expected compute limit, compute price, "
            "TransferChecked and at most one memo",
        )
    priority_fee = _priority_fee(settings, keys, ixs[0], ixs[1])
    memo = _optional(keys, ixs[3:])
    if any(i == 0 for ix in ixs for i in bytes(ix.accounts)):
        raise Refused(
            svm.ERR_FEE_PAYER_TRANSFERRING,
            "our fee payer may pay the fee only; it must not appear in any instruction",
        )
    if message.header.num_required_signatures != 2 or len(tx.signatures) != 2:
        raise Refused(
            svm.ERR_INVALID_PAYLOAD,
            "the transaction must have exactly two signers: our fee payer, then the payer",
        )
    transfer = _transfer(matched, keys, ixs[2])
    if transfer.payer != str(keys[1]):
        raise Refused(
            svm.ERR_INVALID_PAYLOAD, "the transfer's authority must be the transaction's signer"
        )
    signed = to_bytes_versioned(message)
    if not tx.signatures[1].verify(keys[1], signed):
        raise Refused(ERR_SIGNATURE, "the payer's signature does not verify over this message")
    message_hash = hashlib.sha256(signed).hexdigest()
    nonce = memo if memo is not None else f"msg:{message_hash}"
    return SvmVerified(matched, tx, transfer, nonce, message_hash, priority_fee)


def _decode(payload: Any) -> VersionedTransaction:
    text = payload.get("transaction") if isinstance(payload, dict) else None
    try:
        if not isinstance(text, str):
            raise ValueError("payload.transaction must be a base64 string")
        raw = base64.b64decode(text, validate=True)
        if len(raw) > MAX_TRANSACTION_BYTES:
            raise ValueError(f"{len(raw)} bytes, over the {MAX_TRANSACTION_BYTES} of a packet")
        return VersionedTransaction.from_bytes(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise Refused(
            svm.ERR_TRANSACTION_DECODE_FAILED, f"the transaction does not decode ({exc})"
        ) from exc


def _program(keys: list[Pubkey], ix: CompiledInstruction) -> Pubkey | None:
    return keys[ix.program_id_index] if ix.program_id_index < len(keys) else None


def _priority_fee(
    settings: Settings, keys: list[Pubkey], limit: CompiledInstruction, price: CompiledInstruction
) -> int:
    data = bytes(limit.data)
    if _program(keys, limit) != COMPUTE_BUDGET or len(data) != 5 or data[0] != 2:
        raise Refused(svm.ERR_INVALID_COMPUTE_LIMIT, "instruction 1 must be SetComputeUnitLimit")
    units = int.from_bytes(data[1:5], "little")
    data = bytes(price.data)
    if _program(keys, price) != COMPUTE_BUDGET or len(data) != 9 or data[0] != 3:
        raise Refused(svm.ERR_INVALID_COMPUTE_PRICE, "instruction 2 must be SetComputeUnitPrice")
    micro_lamports = int.from_bytes(data[1:9], "little")
    fee = -(-units * micro_lamports // 1_000_000)
    cap = settings.x402_solana_max_priority_fee_lamports
    if micro_lamports > svm.MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS or fee > cap:
        raise Refused(
            svm.ERR_COMPUTE_PRICE_TOO_HIGH,
            f"priority fee {fee} lamports ({units} units at {micro_lamports} micro-lamports); "
            f"we pay at most {cap} and {svm.MAX_COMPUTE_UNIT_PRICE_MICROLAMPORTS} per unit",
        )
    return fee


def _optional(keys: list[Pubkey], ixs: list[CompiledInstruction]) -> str | None:
    """The memo text among the trailing instructions (None without one).

    Lighthouse instructions, which the spec allows, are refused: they assert on state
    (a slot, a clock) and can pass our simulation yet fail on chain, our fee spent.
    """
    memos = []
    for n, ix in enumerate(ixs):
        if _program(keys, ix) != MEMO:
            raise Refused(OPTIONAL_REASONS[n], f"instruction {n + 4} is not a memo")
        memos.append(bytes(ix.data))
    if len(memos) > 1:
        raise Refused(svm.ERR_MEMO_COUNT, "at most one memo (the payment's nonce)")
    if not memos:
        return None
    try:
        text = memos[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(svm.ERR_INVALID_PAYLOAD, "the memo is not UTF-8 text") from exc
    if not text or len(memos[0]) > svm.MAX_MEMO_BYTES:
        raise Refused(svm.ERR_INVALID_PAYLOAD, f"the memo must be 1 to {svm.MAX_MEMO_BYTES} bytes")
    if api_text.problem(text) is not None:  # the nonce is stored: a NUL would be a 503
        raise Refused(svm.ERR_INVALID_PAYLOAD, "the memo must not contain a NUL character")
    return text


def _transfer(matched: Matched, keys: list[Pubkey], ix: CompiledInstruction) -> Transfer:
    data, accounts = bytes(ix.data), bytes(ix.accounts)
    program = _program(keys, ix)
    if program not in TOKEN_PROGRAMS or len(data) != 10 or data[0] != 12 or len(accounts) != 4:
        raise Refused(
            svm.ERR_NO_TRANSFER_INSTRUCTION,
            "instruction 3 must be a single-signer SPL TransferChecked",
        )
    if max(accounts) >= len(keys):
        raise Refused(svm.ERR_INVALID_PAYLOAD, "the transfer names an account the message lacks")
    source, mint, destination, authority = (str(keys[i]) for i in accounts)
    req = matched.offer.requirements
    if mint != req.asset:
        raise Refused(svm.ERR_MINT_MISMATCH, f"the transfer moves {mint}, not {req.asset}")
    if data[9] != USDC_DECIMALS:
        raise Refused(svm.ERR_INVALID_PAYLOAD, f"TransferChecked must say {USDC_DECIMALS} decimals")
    ours = derive_ata(req.pay_to, req.asset, str(program))
    if destination != ours:
        raise Refused(
            svm.ERR_RECIPIENT_MISMATCH,
            f"the transfer pays {destination}, not our token account {ours}",
        )
    amount, price = int.from_bytes(data[1:9], "little"), int(req.amount)
    if amount != price:
        reason = svm.ERR_AMOUNT_INSUFFICIENT if amount < price else ERR_AMOUNT_MISMATCH
        raise Refused(reason, f"the transfer is for {amount} base units; the price is {price}")
    return Transfer(authority, source, destination, mint, amount)


# ---- settlement --------------------------------------------------------------------


class FeePayerUnfunded(Exception):
    """Our fee payer cannot pay for the settlement."""


async def settle(request: Request, verified: SvmVerified) -> Settled:
    """Co-sign, simulate, claim, broadcast and await confirmation; raises Refused or ApiError."""
    settings: Settings = request.app.state.settings
    t = verified.transfer
    if await x402_settle.db_value(
        request, "x402_svm_nonce_seen", t.mint, t.payer, verified.nonce, verified.message_hash
    ):
        raise Refused(svm.ERR_DUPLICATE_SETTLEMENT, "this payment's nonce was already used")
    secret = settings.solana_fee_payer_secret()
    assert secret is not None  # an offer exists only with the key
    signed = co_sign(verified.tx, Keypair.from_bytes(secret))
    pool = rpc.RpcPool(
        "solana",
        settings.solana.rpc_urls,
        kind="solana",
        commitment="confirmed",
        timeout=RPC_TIMEOUT_SECONDS,
        transport=evm_settle.http_transport(),
    )
    try:
        await _check_funds(pool, str(signed.message.account_keys[0]), verified.fee)
        await _simulate(pool, signed)
        settlement_id = await _claim(request, verified, signed)
        await _broadcast(request, pool, signed, verified, settlement_id)
    except FeePayerUnfunded as exc:
        metrics.X402_SETTLEMENTS.labels("solana", "unfunded").inc()
        log.error("x402_fee_payer_unfunded", chain="solana", problem=str(exc))
        raise ApiError(
            503,
            "fee_payer_unfunded",
            str(exc),
            "the operator must fund the Solana fee payer; retry later (nothing was charged)",
            headers={"Retry-After": "60"},
        ) from exc
    except errors.RpcError as exc:  # before the claim: nothing sent, nothing charged
        metrics.X402_SETTLEMENTS.labels("solana", "unknown").inc()
        raise service_unavailable("the solana RPC node (x402 settlement)") from exc
    finally:
        await pool.aclose()
    metrics.X402_SETTLEMENTS.labels("solana", "settled").inc()
    signature = str(signed.signatures[0])
    response = SettleResponse(
        success=True,
        transaction=signature,
        network=verified.matched.requirements_json["network"],
        payer=t.payer,
        amount=str(t.amount),
    )
    return Settled(
        settlement_id,
        signature,
        x402_standard.response_header(verified.matched.version, response),
    )


def co_sign(tx: VersionedTransaction, fee_payer: Keypair) -> VersionedTransaction:
    """The payer's transaction with our fee payer signature in slot 0 (its id)."""
    ours = fee_payer.sign_message(to_bytes_versioned(tx.message))
    return VersionedTransaction.populate(tx.message, [ours, *list(tx.signatures)[1:]])


def _b64(tx: VersionedTransaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


async def _check_funds(pool: rpc.RpcPool, fee_payer: str, fee: int) -> None:
    result = await pool.request("getBalance", [fee_payer, {"commitment": "confirmed"}])
    balance = int(result["value"])
    need = fee + RENT_EXEMPT_MINIMUM
    if balance < need:
        raise FeePayerUnfunded(
            f"the Solana fee payer {fee_payer} holds {balance} lamports; a settlement needs "
            f"{need} (the {fee} lamport fee, and it must stay rent-exempt)"
        )


async def _simulate(pool: rpc.RpcPool, signed: VersionedTransaction) -> None:
    config = {"encoding": "base64", "sigVerify": True, "commitment": "confirmed"}
    result = await pool.request("simulateTransaction", [_b64(signed), config])
    value = result.get("value") or {}
    if value.get("err") is not None:
        logs = [str(line) for line in value.get("logs") or []][-3:]
        tail = f" ({'; '.join(logs)})" if logs else ""
        why = f"the transaction would fail: {value['err']}{tail}"
        raise Refused(svm.ERR_SIMULATION_FAILED, why)


async def _claim(request: Request, v: SvmVerified, signed: VersionedTransaction) -> int:
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
        str(request.url),
    )

    async def claim(conn: db.Connection) -> tuple[str | None, int | None]:
        async with conn.transaction():
            await conn.execute(db.q("x402_svm_lock_source"), t.source)
            busy = await conn.fetchval(db.q("x402_svm_source_busy"), t.source)
            if busy is not None:
                return busy, None
            return None, await conn.fetchval(db.q("x402_svm_claim"), *args)

    busy, settlement_id = await _in_db(request, claim)
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
    request: Request,
    pool: rpc.RpcPool,
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
    settings: Settings = request.app.state.settings
    signature, raw = str(signed.signatures[0]), _b64(signed)
    send_config = {"encoding": "base64", "preflightCommitment": "confirmed", "maxRetries": 0}
    try:
        await pool.request("sendTransaction", [raw, send_config])
    except errors.RpcResponseError as exc:
        # "already processed": a retried send found the first one. Otherwise a refusal,
        # unless an earlier attempt the pool retried got it out through another node.
        if "already been processed" not in str(exc) and not await _seen(pool, signature):
            await _fail(request, settlement_id, f"refused by the node: {exc}")
            raise _failed(v, svm.ERR_TRANSACTION_FAILED, f"the node refused it: {exc}") from exc
    except errors.RpcError as exc:
        log.warning("x402_svm_send_uncertain", signature=signature, error=str(exc))
    try:
        outcome, status = await _await_status(
            pool, signed, raw, settings.x402_settle_timeout_seconds
        )
    except errors.RpcError as exc:
        log.warning("x402_svm_status_unknown", signature=signature, error=str(exc))
        outcome, status = "pending", None
    if outcome == "pending":
        metrics.X402_SETTLEMENTS.labels("solana", "unknown").inc()
        raise _pending(v, signature)
    if outcome == "expired":
        await _fail(request, settlement_id, f"blockhash expired; {signature} never landed")
        raise _failed(
            v,
            svm.ERR_TRANSACTION_FAILED,
            "the transaction expired before it landed; nothing was charged, pay again",
            signature,
        )
    err = (status or {}).get("err")
    if err is not None:
        await _fail(request, settlement_id, f"{signature} failed on chain: {err}", on_chain=True)
        raise _failed(
            v, svm.ERR_TRANSACTION_FAILED, f"the settlement {signature} failed: {err}", signature
        )
    if not await _in_db(request, lambda conn: mark_settled(conn, settlement_id)):
        await _fail(request, settlement_id, "its payment was claimed for an access token first")
        raise service_unavailable("settlement bookkeeping")  # not ours to serve any more


async def mark_settled(conn: db.Connection, settlement_id: int) -> bool:
    """``settling`` -> ``settled`` with the follower's payment, if any, consumed; False
    (and nothing changed) when the call must not be served: the row is no longer
    ``settling``, or its payment was already claimed for an access token."""
    return await x402_settle.settle_row(
        conn,
        ("x402_svm_begin_settled", "x402_svm_settled_payment", "x402_solana_settlements"),
        (settlement_id,),
        lambda r: (r["payment_id"], r["signature"], r["destination"], r["pay_to"], r["mint"]),
        settlement_id,
    )


async def _await_status(
    pool: rpc.RpcPool, signed: VersionedTransaction, raw: str, seconds: float
) -> tuple[str, dict[str, Any] | None]:
    """``confirmed`` with its status (``err`` set when it failed on chain), ``expired``
    (the blockhash is too old and the transaction is nowhere), or ``pending``."""
    signature = str(signed.signatures[0])
    blockhash = str(signed.message.recent_blockhash)
    deadline = time.monotonic() + seconds
    last_send = time.monotonic()
    while True:
        status = await _status(pool, signature, history=False)
        if status and status.get("confirmationStatus") in ("confirmed", "finalized"):
            return "confirmed", status
        if time.monotonic() >= deadline:
            return "pending", None
        if status is None and time.monotonic() - last_send >= REBROADCAST_SECONDS:
            alive = await pool.request("isBlockhashValid", [blockhash, {"commitment": "processed"}])
            if not alive.get("value"):
                if await _status(pool, signature, history=True) is None:
                    return "expired", None  # too old to land, and it did not
            else:
                last_send = time.monotonic()
                again = {"encoding": "base64", "skipPreflight": True, "maxRetries": 0}
                try:
                    await pool.request("sendTransaction", [raw, again])
                except errors.RpcError as exc:
                    log.info("x402_svm_rebroadcast_failed", signature=signature, error=str(exc))
        await asyncio.sleep(POLL_SECONDS)


async def _seen(pool: rpc.RpcPool, signature: str) -> bool:
    """Whether any node we ask knows the transaction; unknown (the RPC failing) counts as
    seen: the caller then waits for a certain answer instead of declaring a failure."""
    try:
        return await _status(pool, signature, history=True) is not None
    except errors.RpcError:
        return True


async def _status(pool: rpc.RpcPool, signature: str, *, history: bool) -> dict[str, Any] | None:
    config = {"searchTransactionHistory": history}
    result = await pool.request("getSignatureStatuses", [[signature], config])
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
    return x402_standard.failure(
        m.version, m.requirements_json, v.transfer.payer, reason, message, signature
    )


async def _fail(request: Request, settlement_id: int, why: str, *, on_chain: bool = False) -> None:
    metrics.X402_SETTLEMENTS.labels("solana", "failed").inc()
    try:
        await x402_settle.db_value(
            request, "x402_svm_mark_failed", settlement_id, why[:500], on_chain
        )
    except ApiError:
        log.error("x402_svm_mark_failed_lost", settlement_id=settlement_id, why=why)


async def _in_db(request: Request, work: Callable[[db.Connection], Awaitable[T]]) -> T:
    """Run ``work`` on one pooled connection within 5 s; a database failure is a 503."""
    pool: db.Pool = request.app.state.pool
    try:
        async with asyncio.timeout(5.0), pool.acquire() as conn:
            return await work(conn)
    except DB_ERRORS as exc:
        log.warning("x402_svm_db_error", error=repr(exc))
        raise service_unavailable("the payment database") from exc
