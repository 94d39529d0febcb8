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

from watcher import db, errors, money, rpc
from watcher.chains import solana as chains_solana
from watcher.refunds import model, solana, store
from watcher.settings import Settings, SolanaChain

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


class SolanaExporter:
    """Exports one Solana network's refunds (``senders.Exporter``); the refund becomes
    ``exported`` and the follower links the first transfer from the wallet that pays its
    destination exactly."""

    formats: tuple[str, ...] = (FORMAT,)

    def __init__(self, chain: SolanaChain, wallet: str, rpc_pool: rpc.RpcPool) -> None:
        self.chain = chain.name
        self._mint = chain.usdc_mint
        self.wallet = wallet
        self._rpc = rpc_pool

    async def aclose(self) -> None:
        await self._rpc.aclose()

    async def export(self, pool: db.Pool, refund_id: int, fmt: str) -> dict[str, Any]:
        row = await store.exportable(pool, self.chain, refund_id, fmt, self.formats)
        try:
            out = await export(
                self._rpc,
                self.wallet,
                str(row["token"]),
                str(row["destination"]),
                int(row["amount"]),
            )
        except errors.RpcError as exc:
            raise model.Refused(
                503, "rpc_unavailable", f"{self.chain}: {exc}", "try again in a moment"
            ) from exc
        async with pool.acquire() as conn:
            await store.mark_exported(conn, refund_id, self.wallet)
        return {
            "format": fmt,
            "refund_id": refund_id,
            "chain": self.chain,
            "wallet": self.wallet,
            "export": out,
        }


def exporter_for(settings: Settings, name: str) -> SolanaExporter | None:
    """The exporter of Solana network ``name``: only while no keypair sends refunds (the
    daemon's wallet is its own to use) and ``X402_REFUND_SOLANA_ADDRESS`` names the signer."""
    wallet = settings.value("x402_refund_solana_address")
    chain = settings.solana_chain(name)
    if settings.value("x402_refund_solana_keypair") is not None or wallet is None:
        return None
    if not chain.rpc_urls:
        return None
    return SolanaExporter(chain, wallet, chains_solana.rpc_pool(chain))
