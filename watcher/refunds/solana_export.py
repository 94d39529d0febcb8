"""A Solana refund as an unsigned message, for a hardware wallet or a multisig to sign.

When no refund keypair is configured (``X402_REFUND_SOLANA_KEYPAIR``), the
refund wallet is ``X402_REFUND_SOLANA_ADDRESS`` and we hand its signer the
legacy message (base64 of the serialized message: the bytes an Ed25519
signature covers), the same as an unsigned transaction (one empty signature
slot, what wallet ``signTransaction`` APIs take), and every field a signer
should check before signing, in plain words.

The message carries a recent blockhash: it must be signed and sent before the
network passes ``last_valid_block_height`` (about a minute); after that it can
never land, and a fresh export is needed. A multisig whose approvals take
longer builds its own transaction from the instructions listed here.
"""

from __future__ import annotations

import base64
from typing import Any

from solders.instruction import Instruction
from solders.signature import Signature
from solders.transaction import Transaction

from watcher import money, rpc
from watcher.refunds import solana

FORMAT = "solana"


def describe(ix: Instruction, plan: solana.Plan) -> dict[str, Any]:
    """One instruction in plain words, with the raw program, accounts and data beside it."""
    accounts = [
        {"pubkey": str(m.pubkey), "signer": m.is_signer, "writable": m.is_writable}
        for m in ix.accounts
    ]
    raw = {
        "program_id": str(ix.program_id),
        "accounts": accounts,
        "data_base64": base64.b64encode(bytes(ix.data)).decode(),
    }
    if ix.program_id == solana.ATA_PROGRAM:
        return {
            "kind": "create_associated_token_account_idempotent",
            "says": (
                f"create {plan.destination}, the USDC token account of {plan.owner}, "
                f"if it does not exist; {plan.payer} pays its rent"
            ),
            "funder": plan.payer,
            "account": plan.destination,
            "owner": plan.owner,
            "mint": plan.mint,
            **raw,
        }
    return {
        "kind": "transfer_checked",
        "says": (
            f"move {money.usd(plan.amount)} USDC ({plan.amount} base units, 6 decimals) "
            f"from {plan.source} to {plan.destination} (owner {plan.owner}), "
            f"authorized by {plan.payer}"
        ),
        "source": plan.source,
        "mint": plan.mint,
        "destination": plan.destination,
        "authority": plan.payer,
        "amount": str(plan.amount),
        "decimals": money.USDC_DECIMALS,
        **raw,
    }


def unsigned(plan: solana.Plan, blockhash: str, last_valid: int) -> dict[str, Any]:
    """The export body for ``plan`` with this blockhash (no I/O)."""
    msg = solana.message(plan, blockhash)
    tx = Transaction.populate(msg, [Signature.default()])
    return {
        "format": FORMAT,
        "message_base64": base64.b64encode(bytes(msg)).decode(),
        "transaction_base64": base64.b64encode(bytes(tx)).decode(),
        "fee_payer": plan.payer,
        "signers": [plan.payer],
        "recent_blockhash": blockhash,
        "last_valid_block_height": last_valid,
        "mint": plan.mint,
        "amount": str(plan.amount),
        "amount_usd": money.usd(plan.amount),
        "to_owner": plan.owner,
        "to_token_account": plan.destination,
        "creates_token_account": plan.create_account,
        "instructions": [describe(ix, plan) for ix in solana.instructions(plan)],
        "note": (
            "sign and send before the network passes last_valid_block_height (about a "
            "minute); after that this message can never land: export again"
        ),
    }


async def export(
    client: rpc.RpcPool, signer: str, mint: str, owner: str, amount: int
) -> dict[str, Any]:
    """Plan the refund of ``amount`` to ``owner`` from ``signer`` and export it unsigned."""
    plan = await solana.plan(client, signer, mint, owner, amount)
    blockhash, last_valid = await solana.latest_blockhash(client)
    return unsigned(plan, blockhash, last_valid)
