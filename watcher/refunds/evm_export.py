"""EVM refunds for an outside signer (no key configured): the refund wallet
(``X402_REFUND_EVM_ADDRESS``, a hardware wallet or a Safe) signs what we export.

* ``eip1559``: the transaction's fields (JSON, hex quantities as JSON-RPC writes them)
  and its unsigned serialization ``0x02 || rlp([...])``, the bytes a signer takes; the
  nonce is the wallet's pending count and the fees today's, so sign it soon.
* ``safe``: a Safe Transaction Builder batch file (``version``, ``chainId``,
  ``createdAt``, ``meta``, ``transactions`` with ``to``/``value``/``data``/
  ``contractMethod``/``contractInputsValues``) with the one USDC ``transfer``; the Safe
  app's import computes its own checksum (the field is optional).

The refund becomes ``exported``; the follower links the first transfer from the wallet
to the destination with the exact amount and confirms it (docs/holds-and-refunds.md).
"""

from __future__ import annotations

import time
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from watcher import db, errors, rpc
from watcher.refunds import evm, model, store
from watcher.settings import EvmChain, Settings

FORMATS = ("eip1559", "safe")
TX_BUILDER_VERSION = "1.18.0"  # the Transaction Builder release whose file shape we write
_TRANSFER_INPUTS = [
    {"internalType": "address", "name": "to", "type": "address"},
    {"internalType": "uint256", "name": "value", "type": "uint256"},
]


def safe_batch(chain_id: int, wallet: str, usdc: str, row: Any) -> dict[str, Any]:
    """The Transaction Builder file of refund ``row`` from Safe ``wallet``."""
    return {
        "version": "1.0",
        "chainId": str(chain_id),
        "createdAt": int(time.time() * 1000),
        "meta": {
            "name": f"Refund {row['refund_key']}",
            "description": f"USDC refund of payment {row['payment_id']} ({row['kind']})",
            "txBuilderVersion": TX_BUILDER_VERSION,
            "createdFromSafeAddress": to_checksum_address(wallet),
            "createdFromOwnerAddress": "",
        },
        "transactions": [
            {
                "to": to_checksum_address(usdc),
                "value": "0",
                "data": None,
                "contractMethod": {
                    "inputs": _TRANSFER_INPUTS,
                    "name": "transfer",
                    "payable": False,
                },
                "contractInputsValues": {
                    "to": to_checksum_address(str(row["destination"])),
                    "value": str(int(row["amount"])),
                },
            }
        ],
    }


def eip1559_doc(tx: dict[str, Any], wallet: str) -> dict[str, Any]:
    """The unsigned transaction as JSON fields, its serialization and signing hash."""
    unsigned = evm.unsigned_bytes(tx)
    as_json = {k: (hex(v) if isinstance(v, int) else v) for k, v in tx.items() if k != "accessList"}
    as_json["accessList"] = []
    return {
        "from": to_checksum_address(wallet),
        "transaction": as_json,
        "unsigned": "0x" + unsigned.hex(),
        "signing_hash": "0x" + keccak(unsigned).hex(),
    }


class EvmExporter:
    """Exports one EVM network's refunds (``senders.Exporter``)."""

    formats: tuple[str, ...] = FORMATS

    def __init__(self, chain: EvmChain, wallet: str) -> None:
        self.chain = chain.name
        self._net = chain
        self.wallet = wallet
        self._rpc: rpc.RpcPool | None = None

    async def aclose(self) -> None:
        if self._rpc is not None:
            await self._rpc.aclose()

    async def export(self, pool: db.Pool, refund_id: int, fmt: str) -> dict[str, Any]:
        row = await store.exportable(pool, self.chain, refund_id, fmt, FORMATS)
        if fmt == "safe":
            out = safe_batch(self._net.chain_id, self.wallet, self._net.usdc, row)
            async with pool.acquire() as conn:
                await store.mark_exported(conn, refund_id, self.wallet)
        else:
            tx = await self._transaction(row)
            async with pool.acquire() as conn, conn.transaction():
                # One nonce per exported refund, kept: exported again (before the follower
                # saw the first land) it is the same transaction, so two signed copies can
                # never both land; a new export takes the next one after ours.
                await store.lock_wallet(conn, self.chain, self.wallet)
                if row["nonce"] is not None:
                    tx["nonce"] = int(row["nonce"])
                else:
                    ours = await store.next_nonce(conn, self.chain, self.wallet)
                    tx["nonce"] = max(int(tx["nonce"]), ours)
                await store.mark_exported(conn, refund_id, self.wallet, nonce=tx["nonce"])
            out = eip1559_doc(tx, self.wallet)
        return {
            "format": fmt,
            "refund_id": refund_id,
            "chain": self.chain,
            "chain_id": self._net.chain_id,
            "wallet": self.wallet,
            "export": out,
        }

    async def _transaction(self, row: Any) -> dict[str, Any]:
        if not self._net.rpc_urls:
            raise model.Refused(
                409,
                "no_rpc",
                f"{self.chain} has no RPC URL for nonce and fees",
                "set its RPC URL, or use format=safe",
            )
        if self._rpc is None:
            self._rpc = rpc.RpcPool(self.chain, self._net.rpc_urls, chain_id=self._net.chain_id)
        dest, amount = str(row["destination"]), int(row["amount"])
        try:
            f = await evm.fees(self._rpc, self.wallet, self._net.usdc, dest, amount)
            nonce = int(
                await self._rpc.request("eth_getTransactionCount", [self.wallet, "pending"]), 16
            )
        except errors.RpcResponseError as exc:
            raise model.Refused(
                409,
                "transfer_would_fail",
                f"the transfer from {self.wallet} would fail: {exc}",
                "fund the refund wallet with USDC, then export again",
            ) from exc
        except errors.RpcError as exc:
            raise model.Refused(
                503, "rpc_unavailable", f"{self.chain}: {exc}", "try again, or use format=safe"
            ) from exc
        return evm.fields(
            self._net.chain_id, nonce, f, self._net.usdc, evm.transfer_data(dest, amount)
        )


def exporter_for(settings: Settings, name: str) -> EvmExporter | None:
    """The exporter of EVM network ``name``: only while no key sends refunds and an export
    wallet is configured (a key's wallet is the daemon's to use: an export would race it)."""
    wallet = settings.value("x402_refund_evm_address")
    if settings.refund_evm_key() is not None or wallet is None:
        return None
    return EvmExporter(settings.evm_chain(name), wallet.lower())
