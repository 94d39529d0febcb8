"""Our relayer: EIP-3009 ``transferWithAuthorization`` submitted with our own key.

``X402_RELAYER_PRIVATE_KEY`` pays the gas; the transaction goes through the
chain's settlement :class:`watcher.rpc.RpcPool` (one per app, see
:mod:`api.x402.clients`). ``prepare`` simulates the call (``eth_estimateGas``)
and checks the relayer can pay the gas *before* anything is claimed;
``submit`` takes the account nonce from the database, signs and stores the
transaction with the authorization marked ``settling`` (the hash is known
before broadcast, so the ledger can link a racing credit), sends, and waits
for the receipt, re-sending the same bytes while it waits. Several API
processes share one key safely: :mod:`api.x402.nonces` says how.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from api.x402 import evm, nonces
from api.x402.errors import RelayerUnfunded, SettlementRejected, SettlementUnknown
from watcher import db, errors, rpc

log = structlog.get_logger(__name__)

TWA_TYPES = (
    "address",
    "address",
    "uint256",
    "uint256",
    "uint256",
    "bytes32",
    "uint8",
    "bytes32",
    "bytes32",
)
TWA_SIGNATURE = f"transferWithAuthorization({','.join(TWA_TYPES)})"
_TWA_SELECTOR = function_signature_to_4byte_selector(TWA_SIGNATURE)
GAS_HEADROOM = 1.25  # estimates are exact on a quiet chain; state can move before inclusion
RECEIPT_POLL_SECONDS = 0.2
RESEND_SECONDS = 2.0  # while waiting, the node gets our transaction again this often


def transfer_calldata(auth: evm.Authorization) -> str:
    """ABI call data for the v/r/s overload (every USDC version has it)."""
    sig = auth.signature
    v = sig[64] if sig[64] >= 27 else sig[64] + 27
    args = abi_encode(
        list(TWA_TYPES),
        [
            *(auth.payer, auth.pay_to, auth.value, auth.valid_after, auth.valid_before),
            *(auth.nonce, v, sig[:32], sig[32:64]),
        ],
    )
    return "0x" + (_TWA_SELECTOR + args).hex()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A simulated settlement: gas and fees fixed, the relayer's funds checked."""

    call: dict[str, str]
    gas: int
    max_fee: int
    tip: int


class Relayer:
    """Our own account submitting ``transferWithAuthorization`` (one chain)."""

    def __init__(
        self,
        private_key: str,
        pool: rpc.RpcPool,
        chain_id: int,
        *,
        receipt_timeout: float = 60.0,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self._account = Account.from_key(private_key)
        self.address: str = str(self._account.address).lower()
        self._pool = pool
        self._chain_id = chain_id
        self._receipt_timeout = receipt_timeout
        # One nonce allocation at a time per process (the database orders processes).
        # api.x402.clients passes the app's lock for the chain, which outlives this.
        self._lock = lock or asyncio.Lock()

    async def prepare(self, asset: str, auth: evm.Authorization) -> Prepared:
        """Simulate the transfer and check gas money; raises before anything is claimed."""
        call = {"from": self.address, "to": asset, "data": transfer_calldata(auth)}
        try:
            gas = int(await self._pool.request("eth_estimateGas", [call]), 16)
        except errors.RpcResponseError as exc:
            raise SettlementRejected(
                "invalid_exact_evm_transaction_simulation_failed",
                f"transferWithAuthorization would revert: {exc}",
            ) from exc
        gas = int(gas * GAS_HEADROOM)
        block = await self._pool.request("eth_getBlockByNumber", ["latest", False])
        base_fee = int(block.get("baseFeePerGas") or "0x0", 16)
        tip = int(await self._pool.request("eth_maxPriorityFeePerGas", []), 16)
        max_fee = 2 * base_fee + tip
        balance = int(await self._pool.request("eth_getBalance", [self.address, "latest"]), 16)
        if balance < gas * max_fee:
            raise RelayerUnfunded(
                f"the x402 relayer {self._account.address} on {self._pool.chain} holds "
                f"{balance} wei; settling needs up to {gas * max_fee} wei of gas: send it ETH"
            )
        return Prepared(call=call, gas=gas, max_fee=max_fee, tip=tip)

    async def submit(self, prepared: Prepared, pool: db.Pool, auth_id: int) -> dict[str, Any]:
        """Take a nonce from the database, sign, store the transaction and mark the
        authorization ``settling`` (all before broadcast, see :mod:`api.x402.nonces`), send,
        and return the receipt."""
        count = await self._pool.request("eth_getTransactionCount", [self.address, "pending"])
        pending = int(count, 16)
        async with self._lock:  # one connection per process waits on the row lock, not many
            signed = await nonces.sign_next(
                pool, self._pool.chain, self.address, pending, self._signer(prepared), auth_id
            )
        try:
            await self._pool.request("eth_sendRawTransaction", [signed.raw])
        except errors.RpcResponseError as exc:
            if not _another_copy_is_there(exc):
                await nonces.refused(pool, signed.tx_hash)
                raise
        except errors.RpcError as exc:  # it may have arrived: the receipt says, resends heal
            log.warning("x402_relayer_send_unknown", tx_hash=signed.tx_hash, error=str(exc))
        if signed.behind:  # a nonce below ours may be lost (ours waits behind it): re-send
            await self._resend_stored(pool, pending)
        return await self._receipt(pool, signed)

    def _signer(self, prepared: Prepared) -> nonces.Signer:
        def sign(nonce: int) -> tuple[str, str]:
            tx = {
                "type": 2,
                "chainId": self._chain_id,
                "nonce": nonce,
                "to": to_checksum_address(prepared.call["to"]),  # eth-account insists
                "data": prepared.call["data"],
                "value": 0,
                "gas": prepared.gas,
                "maxFeePerGas": prepared.max_fee,
                "maxPriorityFeePerGas": prepared.tip,
            }
            signed = self._account.sign_transaction(tx)
            return "0x" + bytes(signed.hash).hex(), "0x" + signed.raw_transaction.hex()

        return sign

    async def _resend_stored(self, pool: db.Pool, pending: int) -> None:
        """Re-broadcast our stored transactions the node does not hold (bounded batch)."""
        rows = await nonces.unconfirmed(pool, self._pool.chain, self.address, pending)
        await asyncio.gather(
            *(self._resend(pool, str(r["tx_hash"]), str(r["raw_tx"])) for r in rows)
        )

    async def _resend(self, pool: db.Pool, tx_hash: str, raw: str) -> bool:
        """Send stored bytes again; False once the node refused them for good."""
        try:
            await self._pool.request("eth_sendRawTransaction", [raw])
        except errors.RpcResponseError as exc:
            if _another_copy_is_there(exc):
                return True
            log.warning("x402_relayer_tx_refused", tx_hash=tx_hash, error=str(exc))
            await nonces.refused(pool, tx_hash)
            return False
        except errors.RpcError:
            return True  # the node is unwell; the next resend tries again
        return True

    async def _receipt(self, pool: db.Pool, signed: nonces.Signed) -> dict[str, Any]:
        """Poll for the receipt; every RESEND_SECONDS re-send the transaction (a node that
        lost it, or never got it, gets it again: the same hash)."""
        deadline = time.monotonic() + self._receipt_timeout
        resend_at = time.monotonic() + RESEND_SECONDS
        while time.monotonic() < deadline:
            receipt = await self._pool.request("eth_getTransactionReceipt", [signed.tx_hash])
            if receipt is not None:
                out: dict[str, Any] = receipt
                return out
            if time.monotonic() >= resend_at:
                resend_at = time.monotonic() + RESEND_SECONDS
                if not await self._resend(pool, signed.tx_hash, signed.raw):
                    raise SettlementUnknown(f"the node refused {signed.tx_hash} on resend")
            await asyncio.sleep(RECEIPT_POLL_SECONDS)
        raise SettlementUnknown(
            f"no receipt for {signed.tx_hash} within {self._receipt_timeout:.0f} s"
        )


def _another_copy_is_there(exc: errors.RpcResponseError) -> bool:
    """The node's refusal says the transaction (or one with its nonce) is known already:
    not a reason to give the nonce back. Anything else (funds, fees, gas) is final."""
    text = str(exc).lower()
    return any(m in text for m in _KNOWN_MARKERS)


_KNOWN_MARKERS = ("already", "known", "nonce too low", "underpriced", "pool is full", "txpool")
