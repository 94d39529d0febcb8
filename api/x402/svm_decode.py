"""Standard x402 on Solana, offline: decode the payer's transaction and check it is ours.

The ``exact`` scheme with us as the fee payer. The payer's x402 client builds
a transaction whose fee payer is our key (``extra.feePayer`` in the 402),
signs it as the transfer's authority and sends it base64-encoded in the
payment header, our signature slot left empty. Before anything is served we
check, offline and in this order, each refusal naming the x402 reason:

* it decodes, has no address lookup tables and exactly two signers: our fee
  payer first, then the payer;
* the instructions are SetComputeUnitLimit, SetComputeUnitPrice, optionally
  the idempotent creation of our owner's token account (spec §6.2; see
  ``_create_ata``), TransferChecked, then at most one memo (its text is the
  nonce); the Lighthouse assertions the spec also allows are refused (see
  ``_optional``);
* the priority fee (units x price) stays under our cap, so a payer cannot
  make us pay more in fees than the call earns;
* our fee payer appears in no instruction: it pays the fee and nothing else;
* the transfer moves exactly the price of the configured mint (6 decimals)
  into our owner's associated token account, and the payer's signature
  verifies over the message.

Then :mod:`api.x402.svm_settle` co-signs, simulates, claims and broadcasts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from solders.instruction import CompiledInstruction
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction
from x402.mechanisms.svm import constants as svm
from x402.mechanisms.svm.utils import derive_ata

from api import text as api_text
from api.x402.errors import Refused
from api.x402.payload import Matched
from watcher.settings import USDC_DECIMALS, Settings

COMPUTE_BUDGET = Pubkey.from_string(svm.COMPUTE_BUDGET_PROGRAM_ADDRESS)
TOKEN_PROGRAMS = (
    Pubkey.from_string(svm.TOKEN_PROGRAM_ADDRESS),
    Pubkey.from_string(svm.TOKEN_2022_PROGRAM_ADDRESS),
)
MEMO = Pubkey.from_string(svm.MEMO_PROGRAM_ADDRESS)
ATA_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
CREATE_IDEMPOTENT = b"\x01"  # the ATA program's CreateIdempotent; data of plain Create is b""
OPTIONAL_REASONS = (
    svm.ERR_UNKNOWN_FOURTH_INSTRUCTION,
    svm.ERR_UNKNOWN_FIFTH_INSTRUCTION,
    svm.ERR_UNKNOWN_SIXTH_INSTRUCTION,
)
# Our own reasons where the spec has none (documented in docs/x402.md).
ERR_AMOUNT_MISMATCH = "invalid_exact_svm_payload_amount_mismatch"
ERR_SIGNATURE = "invalid_exact_svm_payload_signature"

MAX_TRANSACTION_BYTES = 1232  # a Solana packet
LAMPORTS_PER_SIGNATURE = 5_000


@dataclass(frozen=True, slots=True)
class Transfer:
    """The TransferChecked of a payment transaction, as read from the message."""

    payer: str  # the authority that signed it
    source: str
    destination: str
    mint: str
    amount: int
    # The source is the authority's own associated token account: its owner is the
    # authority. Otherwise (a delegate, another account) the owner is not in the message.
    own_account: bool = True


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
    creates = _program(keys, ixs[2]) == ATA_PROGRAM
    transfer_ix = ixs[3] if creates and len(ixs) > 3 else ixs[2]
    first = 4 if creates else 3  # where the optional instructions start
    memo = _optional(keys, ixs[first:], first)
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
    transfer = _transfer(matched, keys, transfer_ix)
    if transfer.payer != str(keys[1]):
        raise Refused(
            svm.ERR_INVALID_PAYLOAD, "the transfer's authority must be the transaction's signer"
        )
    if creates:
        _create_ata(keys, ixs[2], transfer_ix, transfer)
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


def _optional(keys: list[Pubkey], ixs: list[CompiledInstruction], first: int) -> str | None:
    """The memo text among the trailing instructions (None without one).

    Lighthouse instructions, which the spec allows, are refused: they assert on state
    (a slot, a clock) and can pass our simulation yet fail on chain, our fee spent.
    """
    memos = []
    for n, ix in enumerate(ixs):
        if _program(keys, ix) != MEMO:
            at = first + n  # 0-based: 3 is the fourth instruction
            raise Refused(OPTIONAL_REASONS[at - 3], f"instruction {at + 1} is not a memo")
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
    own = derive_ata(authority, mint, str(program)) == source
    return Transfer(authority, source, destination, mint, amount, own)


def _create_ata(
    keys: list[Pubkey], ix: CompiledInstruction, transfer_ix: CompiledInstruction, t: Transfer
) -> None:
    """The optional instruction before the transfer: CreateIdempotent of the very account
    the transfer pays (our owner's, for the mint, under the transfer's token program),
    funded by the payer.

    Our fee payer already appears in no instruction, so it can never be the funder; the
    funder must also be the transfer's authority, so the rent is the payer's own. Plain
    Create (which fails once the account exists) and any other account are refused.
    """
    accounts, data = bytes(ix.accounts), bytes(ix.data)
    if data != CREATE_IDEMPOTENT or len(accounts) != 6 or max(accounts) >= len(keys):
        raise Refused(
            svm.ERR_NO_TRANSFER_INSTRUCTION,
            "instruction 3 may only be CreateIdempotent of our associated token account "
            "(six accounts), before the TransferChecked",
        )
    funder, ata, owner, mint, system, program = (keys[i] for i in accounts)
    if str(funder) != t.payer:
        raise Refused(svm.ERR_INVALID_PAYLOAD, "the token account's rent must be the payer's")
    token_program = _program(keys, transfer_ix)
    if (
        (str(ata), str(mint)) != (t.destination, t.mint)
        or (system, program) != (SYSTEM_PROGRAM, token_program)
        or derive_ata(str(owner), t.mint, str(token_program)) != t.destination
    ):
        raise Refused(
            svm.ERR_RECIPIENT_MISMATCH,
            f"the account created must be our owner's {t.destination}, the one the transfer pays",
        )
