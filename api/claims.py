"""Claims: turn one credited payment into one access token, only for whoever paid.

Two proofs are accepted (seeing a hash on an explorer proves nothing):

* the invoice's ``claim_secret`` (shown once, to whoever created the invoice);
* a signature by the sending address over :func:`claim_message`, which names
  the chain and the transaction: EIP-191 ``personal_sign`` from an EOA,
  EIP-1271 ``isValidSignature`` for a contract wallet (the only RPC call on a
  payer's path), ed25519 from a Solana wallet.

Issuing locks the payment row, so racing claims serialise; the unique
``access_tokens.payment_id`` makes a second token impossible even so. A second
claim is a 409 naming the token already issued.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct
from solders.pubkey import Pubkey
from solders.signature import Signature

from api import payment_required, paywall
from api.errors import DB_ERRORS, ApiError, service_unavailable
from api.x402.clients import Clients
from watcher import db, errors, keys, ledger, networks
from watcher.screening import core
from watcher.settings import Settings

log = structlog.get_logger(__name__)

EIP1271_MAGIC = "0x1626ba7e"  # bytes4(keccak256("isValidSignature(bytes32,bytes)"))
# The only answer that means yes: the bytes4 ABI-encoded as one word (left-aligned,
# 28 zero bytes). A prefix match would accept a wallet that echoes its calldata.
EIP1271_YES = EIP1271_MAGIC + "00" * 28


def claim_message(chain: str, tx_hash: str) -> str:
    """The exact text a payer signs to claim the payment(s) of ``tx_hash`` on ``chain``."""
    return f"Claim an x402 access token for my USDC payment\nchain: {chain}\ntx: {tx_hash}"


def secret_matches(secret: str, stored: bytes) -> bool:
    return hmac.compare_digest(keys.sha256(secret), bytes(stored))


# ---- signatures ---------------------------------------------------------------------


def _hex_bytes(signature: str) -> bytes | None:
    text = signature.strip().removeprefix("0x")
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def recover_evm_signer(message: str, signature: str) -> str | None:
    """The EOA that personal_signed ``message`` (lowercase), or None."""
    raw = _hex_bytes(signature)
    if raw is None or len(raw) != 65:
        return None
    try:
        signer: str = Account.recover_message(encode_defunct(text=message), signature=raw)
    except Exception:  # eth-keys raises bare BadSignature/ValidationError for junk input
        return None
    return signer.lower()


async def eip1271_valid(
    clients: Clients, chain: str, wallet: str, message: str, signature: str
) -> bool:
    """Ask the contract at ``wallet`` whether it accepts ``signature`` over the EIP-191 hash
    (through the app's EIP-1271 pool for ``chain``)."""
    raw = _hex_bytes(signature)
    if raw is None or networks.family(chain) != "evm":
        return False
    pool = clients.eip1271_pool(chain)
    if pool is None:
        return False
    data = abi_encode(["bytes32", "bytes"], [bytes(defunct_hash_message(text=message)), raw])
    call = {"to": wallet, "data": EIP1271_MAGIC + data.hex()}
    try:
        result = await pool.request("eth_call", [call, "latest"])
    except errors.RpcResponseError:
        return False  # reverted: no such function, or the wallet said no loudly
    except errors.RpcError as exc:
        raise service_unavailable(f"the {chain} RPC node (contract-wallet check)") from exc
    return eip1271_says_yes(result)


def eip1271_says_yes(result: object) -> bool:
    """Exactly the 32-byte magic word; short, long or dirty answers are refusals.

    Stricter than OpenZeppelin's SignatureChecker, which reads the first word of a
    longer answer: an isValidSignature that returns more than a bytes4 is not one.
    """
    return isinstance(result, str) and result.lower() == EIP1271_YES


def ed25519_valid(owner: str, message: str, signature: str) -> bool:
    """A Solana wallet's ed25519 signature (base58 or base64) over ``message``."""
    try:
        pubkey = Pubkey.from_string(owner)
        sig = _solana_signature(signature.strip())
    except ValueError:
        return False
    return bool(sig.verify(pubkey, message.encode("utf-8")))


def _solana_signature(text: str) -> Signature:
    try:
        return Signature.from_string(text)
    except ValueError:
        raw = base64.b64decode(text, validate=True)  # binascii.Error is a ValueError
        return Signature.from_bytes(raw)


async def signer_among(
    clients: Clients, chain: str, tx_hash: str, senders: Sequence[str], signature: str
) -> str | None:
    """Which of the payment senders signed the claim message, if any."""
    message = claim_message(chain, tx_hash)
    if networks.family(chain) == "solana":
        return next((s for s in senders if ed25519_valid(s, message, signature)), None)
    recovered = recover_evm_signer(message, signature)
    if recovered in senders:
        return recovered
    for sender in senders:  # not an EOA signature of a sender: maybe a contract wallet
        if await eip1271_valid(clients, chain, sender, message, signature):
            return sender
    return None


# ---- issuing ---------------------------------------------------------------------------


def already_claimed(token_id: int | None, what: str) -> ApiError:
    return ApiError(
        409,
        "already_claimed",
        f"{what} already bought access token {token_id}",
        "use the token you received then; a payment buys one token only",
        token_id=token_id,
    )


MAX_REQUESTS = 2**31 - 1  # access_tokens.requests_total is an integer


async def issue_token(pool: db.Pool, settings: Settings, payment_id: int) -> dict[str, Any]:
    """Mint the one token a credited payment buys; 409 if it already has one."""
    token = secrets.token_urlsafe(32)
    lifetime = timedelta(hours=settings.x402_token_expiry_hours)
    price = settings.price_per_call_units
    try:
        async with pool.acquire() as conn:
            row = await ledger.claim(
                conn,
                paywall.token_hash(token),
                payment_id,
                price=price,
                lifetime=lifetime,
                max_requests=MAX_REQUESTS,
            )
            if row is None:
                why = await conn.fetchrow(db.q("api_claim_refusal"), payment_id)
    except DB_ERRORS as exc:
        log.warning("claim_db_error", error=repr(exc))
        raise service_unavailable("the database") from exc
    if row is None:
        raise _refusal(why, price)
    return {
        "token": token,
        "token_id": row["id"],
        "requests": row["requests_total"],
        "remaining": row["remaining"],
        "expires_at": row["expires_at"],
        "chain": row["chain"],
        "tx_hash": row["tx_hash"],
        "payment_id": payment_id,
        "header": payment_required.TOKEN_HEADER,
        "note": "shown once: the server keeps only its SHA-256",
    }


def review_refusal(state: str, reason: str | None) -> ApiError:
    """A held payment waits for an operator; a rejected one is refundable, never claimable."""
    if state == "held":
        return ApiError(
            409,
            "payment_held",
            f"this payment is held for review: {reason}",
            "an operator reviews held payments; ask POST /x402/verify-payment again later, "
            "or contact the merchant",
        )
    return ApiError(
        409,
        "payment_rejected",
        f"this payment was rejected after review: {reason}",
        "it buys nothing; the merchant's operator can refund it: contact the merchant",
    )


def too_old_refusal(paid_at: datetime) -> ApiError:
    """The age rule's second half (issue 16): an old credited payment is refunded, not claimed."""
    return ApiError(
        409,
        "payment_too_old",
        f"this payment's block is from {paid_at.isoformat()}, older than the claim limit "
        "(X402_MAX_PAYMENT_AGE_DAYS)",
        "it can no longer buy access; the merchant's operator can refund it: contact the merchant",
    )


def reorged_refusal() -> ApiError:
    """A credited payment whose block left the canonical chain buys nothing (yet)."""
    return ApiError(
        409,
        "payment_reorged",
        "this payment's block left the canonical chain after it was credited; it buys nothing "
        "until the same transfer is included again and confirmed",
        "ask POST /x402/verify-payment again later; if the transaction never lands again, pay "
        "again",
        headers={"Retry-After": "60"},
    )


def _refusal(why: asyncpg.Record | None, price: int) -> ApiError:
    if why is not None and why["reorged_after_credit"]:
        return reorged_refusal()
    if why is not None and why["token_id"] is not None:
        return already_claimed(why["token_id"], "this payment")
    if why is not None and why["state"] in ("held", "rejected"):
        return review_refusal(why["state"], why["reason"])
    cutoff = core.current().claim_cutoff(datetime.now(UTC))
    if why is not None and why["state"] == "credited" and cutoff and why["paid_at"] < cutoff:
        return too_old_refusal(why["paid_at"])
    if why is not None and why["state"] == "credited":
        return ApiError(
            422,
            "amount_too_small",
            f"{why['amount']} base units buy no call at {price} per call",
            "pay at least the price of one call",
        )
    return ApiError(
        409,
        "not_claimable",
        "this payment is not credited",
        "check POST /x402/verify-payment for its state",
    )
