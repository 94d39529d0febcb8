"""Our relayer: EIP-3009 ``transferWithAuthorization`` submitted with our own key.

``X402_RELAYER_PRIVATE_KEY`` pays the gas; the transaction goes through the
chain's settlement :class:`watcher.rpc.RpcPool` (one per app, see
:mod:`api.x402.clients`). ``prepare`` simulates the call (``eth_estimateGas``)
and checks the relayer can pay the gas *before* anything is claimed;
``submit`` signs, reports the transaction hash (known before broadcast, so the
ledger can link a racing credit), sends and waits for the receipt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from api.x402 import evm
from api.x402.errors import RelayerUnfunded, SettlementRejected, SettlementUnknown
from watcher import errors, rpc

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
        # One process sends one transaction at a time per relayer: account nonces stay in
        # order. api.x402.clients passes the app's lock for the chain, which outlives this.
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

    async def submit(
        self, prepared: Prepared, on_hash: Callable[[str], Awaitable[None]]
    ) -> dict[str, Any]:
        """Sign, record the hash (``on_hash``), send, and return the receipt."""
        async with self._lock:
            count = await self._pool.request("eth_getTransactionCount", [self.address, "pending"])
            tx = {
                "type": 2,
                "chainId": self._chain_id,
                "nonce": int(count, 16),
                "to": to_checksum_address(prepared.call["to"]),  # eth-account insists
                "data": prepared.call["data"],
                "value": 0,
                "gas": prepared.gas,
                "maxFeePerGas": prepared.max_fee,
                "maxPriorityFeePerGas": prepared.tip,
            }
            signed = self._account.sign_transaction(tx)
            tx_hash = "0x" + bytes(signed.hash).hex()
            await on_hash(tx_hash)
            await self._pool.request(
                "eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()]
            )
        return await self._receipt(tx_hash)

    async def _receipt(self, tx_hash: str) -> dict[str, Any]:
        deadline = time.monotonic() + self._receipt_timeout
        while time.monotonic() < deadline:
            receipt = await self._pool.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                out: dict[str, Any] = receipt
                return out
            await asyncio.sleep(RECEIPT_POLL_SECONDS)
        raise SettlementUnknown(f"no receipt for {tx_hash} within {self._receipt_timeout:.0f} s")
