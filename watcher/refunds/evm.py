"""EVM refunds: USDC ``transfer(to, amount)`` from the refund wallet, exactly once; or
the same transfer unsigned, for a hardware wallet or a Safe.

Exactly once across crashes: the nonce is allocated and the transaction signed inside
one database transaction that stores the raw bytes and their hash (``signed``) and
commits BEFORE ``eth_sendRawTransaction``. Every pass re-checks ``signed``/``sent``
refunds: a receipt means it landed (the follower confirms it when deep); no receipt with
the nonce still free means the same bytes are sent again (same hash: never twice); the
nonce taken by another transaction means ``failed`` for an operator's look, never a new
signature for money that may already have left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from eth_account import Account
from eth_utils.address import to_checksum_address

from watcher import db, errors, rpc
from watcher.refunds import rlp, store
from watcher.settings import EvmChain, Settings

log = structlog.get_logger(__name__)

TRANSFER_SELECTOR = "a9059cbb"  # bytes4(keccak256("transfer(address,uint256)"))
GAS_HEADROOM = 1.25  # an estimate is exact on a quiet chain; state can move before inclusion
PASS_LIMIT = 20  # refunds one pass signs or re-checks per status (bounded work)
# A node's refusal that says the transaction (or its nonce) is known: not a failure.
_KNOWN = ("already", "known", "nonce too low", "underpriced", "txpool")


def transfer_data(to: str, amount: int) -> str:
    """ABI calldata of ``transfer(to, amount)``."""
    return (
        "0x" + TRANSFER_SELECTOR + to.lower().removeprefix("0x").rjust(64, "0") + (f"{amount:064x}")
    )


@dataclass(frozen=True, slots=True)
class Fees:
    gas: int
    max_fee: int
    tip: int


async def fees(pool: rpc.RpcPool, wallet: str, usdc: str, to: str, amount: int) -> Fees:
    """Gas (simulated from ``wallet``) and EIP-1559 fees; RpcResponseError when the transfer
    would revert (the wallet holds too little USDC)."""
    call = {"from": wallet, "to": usdc, "data": transfer_data(to, amount)}
    gas = int(int(await pool.request("eth_estimateGas", [call]), 16) * GAS_HEADROOM)
    block = await pool.request("eth_getBlockByNumber", ["latest", False])
    base_fee = int(block.get("baseFeePerGas") or "0x0", 16)
    tip = int(await pool.request("eth_maxPriorityFeePerGas", []), 16)
    return Fees(gas=gas, max_fee=2 * base_fee + tip, tip=tip)


def fields(chain_id: int, nonce: int, f: Fees, usdc: str, data: str) -> dict[str, Any]:
    """The EIP-1559 transaction as eth-account signs it."""
    return {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": to_checksum_address(usdc),
        "value": 0,
        "data": data,
        "gas": f.gas,
        "maxFeePerGas": f.max_fee,
        "maxPriorityFeePerGas": f.tip,
        "accessList": [],
    }


def unsigned_bytes(tx: dict[str, Any]) -> bytes:
    """The unsigned EIP-1559 serialization a signer takes: 0x02 || rlp([chainId, nonce,
    maxPriorityFeePerGas, maxFeePerGas, gas, to, value, data, accessList])."""
    items: list[Any] = [
        tx["chainId"],
        tx["nonce"],
        tx["maxPriorityFeePerGas"],
        tx["maxFeePerGas"],
        tx["gas"],
        bytes.fromhex(str(tx["to"])[2:]),
        tx["value"],
        bytes.fromhex(str(tx["data"])[2:]),
        [],
    ]
    return b"\x02" + rlp.encode(items)


def _known(exc: errors.RpcResponseError) -> bool:
    return any(m in str(exc).lower() for m in _KNOWN)


class EvmSender:
    """Sends one EVM network's refunds from the key's wallet (``senders.Sender``)."""

    def __init__(self, chain: EvmChain, key: str, rpc_pool: rpc.RpcPool | None = None) -> None:
        self.chain = chain.name
        self._net = chain
        self._account = Account.from_key(key)
        self.wallet = str(self._account.address).lower()
        self.rpc = rpc_pool or rpc.RpcPool(chain.name, chain.rpc_urls, chain_id=chain.chain_id)

    async def aclose(self) -> None:
        await self.rpc.aclose()

    async def run_once(self, pool: db.Pool) -> int:
        """Re-check what was signed first (a restart heals before it signs more), then sign
        and send what was requested."""
        work = 0
        for rid in await store.due(pool, self.chain, ("signed", "sent"), PASS_LIMIT):
            work += await self._recheck(pool, rid)
        for rid in await store.due(pool, self.chain, ("requested",), PASS_LIMIT):
            work += await self._send_new(pool, rid)
        return work

    async def _send_new(self, pool: db.Pool, rid: int) -> int:
        row = await pool.fetchrow(db.q("refund_by_id"), rid)
        if row is None or row["status"] != "requested":
            return 0
        dest, amount = str(row["destination"]), int(row["amount"])
        try:  # RPC first, no database connection held meanwhile
            f = await fees(self.rpc, self.wallet, self._net.usdc, dest, amount)
            pending = int(
                await self.rpc.request("eth_getTransactionCount", [self.wallet, "pending"]), 16
            )
            balance = int(await self.rpc.request("eth_getBalance", [self.wallet, "latest"]), 16)
        except errors.RpcError as exc:
            await store.note_error(pool, rid, f"cannot prepare the transfer: {exc}")
            return 0
        if balance < f.gas * f.max_fee:
            await store.note_error(
                pool,
                rid,
                f"the refund wallet {self.wallet} holds {balance} wei; "
                f"sending needs up to {f.gas * f.max_fee} wei of gas: send it ETH",
            )
            return 0
        async with pool.acquire() as conn, conn.transaction():
            await store.lock_wallet(conn, self.chain, self.wallet)
            if await store.lock_requested(conn, rid) is None:
                return 0  # another signer took it
            stop = await store.blocked(conn, rid)  # its payment may have changed since
            if stop is None:
                nonce = max(pending, await store.next_nonce(conn, self.chain, self.wallet))
                raw, tx_hash = await self._sign(conn, rid, nonce, f, dest, amount)
        if stop is not None:
            return await _hold_back(pool, rid, stop)
        log.info("refund_signed", chain=self.chain, refund=rid, nonce=nonce, tx_hash=tx_hash)
        await self._broadcast(pool, rid, raw)  # only after the commit above
        return 1

    async def _sign(
        self, conn: db.Connection, rid: int, nonce: int, f: Fees, dest: str, amount: int
    ) -> tuple[str, str]:
        """Sign the transfer at ``nonce`` and record it (``signed``) in the caller's
        transaction: (raw transaction, hash)."""
        tx = fields(self._net.chain_id, nonce, f, self._net.usdc, transfer_data(dest, amount))
        signed = self._account.sign_transaction(tx)
        raw = "0x" + bytes(signed.raw_transaction).hex()
        tx_hash = "0x" + bytes(signed.hash).hex()
        detail = {"gas": f.gas, "max_fee": f.max_fee, "tip": f.tip}
        await store.mark_signed(
            conn, rid, wallet=self.wallet, nonce=nonce, raw_tx=raw, tx_hash=tx_hash, detail=detail
        )
        return raw, tx_hash

    async def _broadcast(self, pool: db.Pool, rid: int, raw: str) -> None:
        try:
            await self.rpc.request("eth_sendRawTransaction", [raw])
        except errors.RpcResponseError as exc:
            if not _known(exc):  # kept signed: the re-check decides (re-send or failed)
                await store.note_error(pool, rid, f"the node refused the transaction: {exc}")
                return
        except errors.RpcError as exc:  # it may have arrived: the re-check finds out
            await store.note_error(pool, rid, f"broadcast unanswered: {exc}")
            return
        if await store.mark_sent(pool, rid):
            log.info("refund_sent", chain=self.chain, refund=rid)

    async def _recheck(self, pool: db.Pool, rid: int) -> int:
        row = await pool.fetchrow(db.q("refund_by_id"), rid)
        if row is None or row["status"] not in ("signed", "sent") or row["wallet"] != self.wallet:
            return 0
        try:  # the count first: a transaction mined after it still has its receipt below
            used = int(
                await self.rpc.request("eth_getTransactionCount", [self.wallet, "latest"]), 16
            )
            receipt = await self.rpc.request("eth_getTransactionReceipt", [row["tx_hash"]])
        except errors.RpcError as exc:
            await store.note_error(pool, rid, f"cannot re-check: {exc}")
            return 0
        if receipt is not None:
            if int(receipt.get("status") or "0x0", 16) != 1:
                block = int(receipt.get("blockNumber") or "0x0", 16)
                await store.mark_failed(
                    pool,
                    rid,
                    f"the transfer reverted in block {block}: no USDC moved",
                    moved_nothing=True,
                )
            elif row["status"] == "signed":
                await store.mark_sent(pool, rid)
            return 1
        if used > int(row["nonce"]):
            await store.mark_failed(
                pool,
                rid,
                f"nonce {row['nonce']} of {self.wallet} was used by another transaction and "
                f"{row['tx_hash']} has no receipt: check the wallet's history before refunding "
                "again (never re-signed automatically)",
            )
            return 1
        await self._broadcast(pool, rid, str(row["raw_tx"]))  # same bytes, same hash
        return 1


async def _hold_back(pool: db.Pool, rid: int, stop: store.Blocked) -> int:
    """A refund its payment no longer backs: failed for good, or kept requested (and
    said why) until the payment is confirmed again."""
    log.warning("refund_held_back", refund=rid, why=stop.why, final=stop.final)
    if stop.final:
        return int(await store.mark_failed(pool, rid, stop.why, moved_nothing=True))
    await store.note_error(pool, rid, stop.why)
    return 0


def can_send(settings: Settings, name: str) -> bool:
    """EVM network ``name`` sends refunds: a refund key and an RPC URL."""
    return settings.refund_evm_key() is not None and bool(settings.evm_chain(name).rpc_urls)


def sender_for(settings: Settings, name: str) -> EvmSender | None:
    """The sender of EVM network ``name``: None without a refund key or an RPC URL."""
    key = settings.refund_evm_key()
    if key is None or not can_send(settings, name):
        return None
    return EvmSender(settings.evm_chain(name), key)
