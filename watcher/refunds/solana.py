"""Solana refunds on the chain's side: build, sign, send and re-check one refund transaction.

A refund is one legacy transaction from the refund wallet (fee payer and token
authority at once):

1. ``CreateIdempotent`` of the destination owner's associated token account for
   the USDC mint, only when that account does not exist at ``finalized`` (the
   refund wallet pays its rent, ~0.002 SOL; idempotent, so an account created
   meanwhile does not fail the refund);
2. ``TransferChecked`` of the amount (USDC's 6 decimals checked by the token
   program) from the refund wallet's associated token account to it.

Exactly once across crashes rests on what the caller stores before it sends:
the signed bytes, their signature and the blockhash's ``lastValidBlockHeight``
(:class:`Signed`). After a restart :func:`check` says what became of them:

* found by ``getSignatureStatuses`` (history searched): it landed (or failed on
  chain, fee paid, nothing moved);
* not found while the finalized block height is at or below
  ``lastValidBlockHeight``: it may still land, so the *same bytes* are sent again;
* not found once the finalized block height is past ``lastValidBlockHeight``
  (checked before a second status look, so nothing can land in between): it can
  never land, and only then may a new transaction be signed for the refund.

No DB here, and no RPC call is made while the caller holds a connection.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from watcher import errors, money, rpc

log = structlog.get_logger(__name__)

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
TRANSFER_CHECKED = 12  # SPL Token instruction tag
CREATE_IDEMPOTENT = 1  # associated token account program instruction tag
SIGNATURE_FEE = 5_000  # lamports per signature; a refund has one
TOKEN_ACCOUNT_SIZE = 165
# A system account must keep this much to stay rent-exempt (0 data bytes).
WALLET_RENT_MINIMUM = 890_880

State = Literal["landed", "failed", "pending", "expired"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one refund transaction does, before a blockhash is chosen."""

    payer: str  # the refund wallet: fee payer and token authority
    mint: str
    source: str  # the refund wallet's associated token account
    owner: str  # who gets the money back
    destination: str  # the owner's associated token account
    amount: int
    create_account: bool  # the destination does not exist yet: create it (we pay the rent)


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed refund: what is stored (status ``signed``) before it is ever sent."""

    raw: bytes
    signature: str
    blockhash: str
    last_valid_block_height: int
    plan: Plan

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode()


@dataclass(frozen=True, slots=True)
class Status:
    """What became of a signature: :data:`State`, and where it landed if it did."""

    state: State
    slot: int | None = None
    confirmation: str | None = None  # processed / confirmed / finalized
    error: Any = None
    block_height: int | None = None  # the finalized height compared, when it was

    @property
    def final(self) -> bool:
        """Settled for good: landed at finalized, failed at finalized, or expired."""
        return self.state == "expired" or self.confirmation == "finalized"


class Unfunded(errors.WatcherError):
    """The refund wallet cannot pay this refund (USDC, or SOL for the fee and rent)."""


def associated(owner: str, mint: str) -> str:
    """The associated token account of ``owner`` for ``mint`` (classic token program)."""
    return str(get_associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(mint)))


# ---- building ------------------------------------------------------------------------


def create_idempotent_ix(payer: str, owner: str, mint: str) -> Instruction:
    """The associated token account program's CreateIdempotent, funded by ``payer``."""
    return Instruction(
        ATA_PROGRAM,
        bytes([CREATE_IDEMPOTENT]),
        [
            AccountMeta(Pubkey.from_string(payer), True, True),
            AccountMeta(Pubkey.from_string(associated(owner, mint)), False, True),
            AccountMeta(Pubkey.from_string(owner), False, False),
            AccountMeta(Pubkey.from_string(mint), False, False),
            AccountMeta(SYSTEM_PROGRAM, False, False),
            AccountMeta(TOKEN_PROGRAM, False, False),
        ],
    )


def transfer_checked_ix(plan: Plan) -> Instruction:
    """TransferChecked of ``plan.amount`` (6 decimals) from the refund wallet's account."""
    data = struct.pack("<BQB", TRANSFER_CHECKED, plan.amount, money.USDC_DECIMALS)
    return Instruction(
        TOKEN_PROGRAM,
        data,
        [
            AccountMeta(Pubkey.from_string(plan.source), False, True),
            AccountMeta(Pubkey.from_string(plan.mint), False, False),
            AccountMeta(Pubkey.from_string(plan.destination), False, True),
            AccountMeta(Pubkey.from_string(plan.payer), True, False),
        ],
    )


def instructions(plan: Plan) -> list[Instruction]:
    """The refund's instructions in order: create the destination if missing, then pay."""
    out = [create_idempotent_ix(plan.payer, plan.owner, plan.mint)] if plan.create_account else []
    return [*out, transfer_checked_ix(plan)]


def message(plan: Plan, blockhash: str) -> Message:
    """The legacy message a signer signs (hardware wallets read legacy messages best)."""
    return Message.new_with_blockhash(
        instructions(plan), Pubkey.from_string(plan.payer), Hash.from_string(blockhash)
    )


async def plan(client: rpc.RpcPool, payer: str, mint: str, owner: str, amount: int) -> Plan:
    """The refund of ``amount`` to ``owner``, creating its token account when it is missing.

    Looked up at ``finalized``: an account seen only at ``confirmed`` could vanish with
    its fork, and the idempotent create costs nothing more when the account exists.
    """
    if amount <= 0:
        raise ValueError("a refund moves a positive amount")
    destination = associated(owner, mint)
    answer = await client.request(
        "getAccountInfo", [destination, {"encoding": "base64", "commitment": "finalized"}]
    )
    value = (answer or {}).get("value")
    exists = value is not None and value.get("owner") == str(TOKEN_PROGRAM)
    return Plan(payer, mint, associated(payer, mint), owner, destination, amount, not exists)


async def latest_blockhash(client: rpc.RpcPool) -> tuple[str, int]:
    """A recent blockhash (``confirmed``) and the last block height it is valid at."""
    answer = await client.request("getLatestBlockhash", [{"commitment": "confirmed"}])
    value = answer["value"]
    return str(value["blockhash"]), int(value["lastValidBlockHeight"])


def sign(plan_: Plan, keypair: Keypair, blockhash: str, last_valid: int) -> Signed:
    """Sign ``plan_`` with the refund wallet's key (no I/O: the caller stores it, then sends)."""
    if str(keypair.pubkey()) != plan_.payer:
        raise ValueError(f"the key is {keypair.pubkey()}, the refund wallet is {plan_.payer}")
    msg = message(plan_, blockhash)
    tx = Transaction([keypair], msg, Hash.from_string(blockhash))
    return Signed(bytes(tx), str(tx.signatures[0]), blockhash, last_valid, plan_)


async def check_funds(client: rpc.RpcPool, plan_: Plan) -> None:
    """Raise :class:`Unfunded` unless the refund wallet holds the USDC, the fee and the rent."""
    need = SIGNATURE_FEE + WALLET_RENT_MINIMUM
    if plan_.create_account:
        need += int(await client.request("getMinimumBalanceForRentExemption", [TOKEN_ACCOUNT_SIZE]))
    lamports = await client.request("getBalance", [plan_.payer, {"commitment": "confirmed"}])
    have = int((lamports or {}).get("value") or 0)
    if have < need:
        what = (
            "the fee, the rent of the payer's new token account"
            if plan_.create_account
            else "the fee"
        )
        raise Unfunded(
            f"the Solana refund wallet {plan_.payer} holds {have} lamports; this refund needs "
            f"{need} ({what}, and the wallet must stay rent-exempt)"
        )
    units = await token_balance(client, plan_.source)
    if units < plan_.amount:
        raise Unfunded(
            f"the Solana refund wallet's USDC account {plan_.source} holds "
            f"{money.usd(units)} USDC; this refund sends {money.usd(plan_.amount)}"
        )


async def token_balance(client: rpc.RpcPool, account: str) -> int:
    """A token account's balance in base units at ``confirmed`` (0 when it does not exist)."""
    answer = await client.request(
        "getAccountInfo", [account, {"encoding": "jsonParsed", "commitment": "confirmed"}]
    )
    value = (answer or {}).get("value") or {}
    info = ((value.get("data") or {}).get("parsed") or {}).get("info") or {}
    return int((info.get("tokenAmount") or {}).get("amount") or 0)


# ---- sending and re-checking -----------------------------------------------------------


async def send(client: rpc.RpcPool, signed: Signed) -> str | None:
    """Broadcast the stored bytes; None when the node took them (or had them already),
    else the node's refusal (its preflight). Never raises for a refusal: the caller's
    next :func:`check` decides, as a transport fault leaves it unknown anyway."""
    config = {"encoding": "base64", "preflightCommitment": "confirmed"}
    try:
        await client.request("sendTransaction", [signed.base64, config])
    except errors.RpcResponseError as exc:
        if "already been processed" in str(exc):
            return None
        log.warning("refund_solana_send_refused", signature=signed.signature, error=str(exc))
        return str(exc)
    return None


async def statuses(client: rpc.RpcPool, signatures: Sequence[str]) -> list[dict[str, Any] | None]:
    """``getSignatureStatuses`` with the history searched (a restart may come late)."""
    answer = await client.request(
        "getSignatureStatuses", [list(signatures), {"searchTransactionHistory": True}]
    )
    values = (answer or {}).get("value") or []
    return [values[i] if i < len(values) else None for i in range(len(signatures))]


def _found(status: dict[str, Any]) -> Status:
    err = status.get("err")
    return Status(
        "failed" if err is not None else "landed",
        int(status["slot"]) if status.get("slot") is not None else None,
        status.get("confirmationStatus"),
        err,
    )


async def check(client: rpc.RpcPool, signature: str, last_valid_block_height: int) -> Status:
    """What became of ``signature``: landed, failed on chain, pending, or expired for good.

    Expired needs the *finalized* block height past ``lastValidBlockHeight`` first and
    the signature still unknown after that: no block that could hold it is left to come.
    """
    (first,) = await statuses(client, [signature])
    if first is not None:
        return _found(first)
    height = int(await client.request("getBlockHeight", [{"commitment": "finalized"}]))
    if height <= last_valid_block_height:
        return Status("pending", block_height=height)
    (again,) = await statuses(client, [signature])
    if again is not None:
        return _found(again)
    return Status("expired", block_height=height)
