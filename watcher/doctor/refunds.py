"""Doctor rows for the EVM refund wallet: gas (ETH) and USDC on each network with an RPC
URL (docs/holds-and-refunds.md "Refunds").

With a key (``X402_REFUND_EVM_PRIVATE_KEY``) the daemon pays the gas itself: a wallet
that cannot pay one refund's gas is a ✗ (refunds would stay ``requested``); less than
:data:`GAS_REFUNDS_WARN` refunds' worth, or no USDC, is a ⚠. With only an address (an
outside signer) the same balances are shown as ⚠ when low: that wallet pays when it signs.
"""

from __future__ import annotations

import httpx

from watcher import money, rpc
from watcher.doctor.report import Check
from watcher.settings import EvmChain, Settings

GAS_PER_REFUND = 100_000  # a USDC transfer takes ~45-65k gas; with headroom
GAS_REFUNDS_WARN = 10  # warn below this many refunds' gas


def applies(settings: Settings, chain: EvmChain) -> bool:
    """A refund wallet is configured and the network has an RPC URL to ask."""
    return settings.refund_evm_wallet() is not None and bool(chain.rpc_urls)


async def wallet_rows(
    settings: Settings,
    chain: EvmChain,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Check]:
    """The refund wallet's gas and USDC on ``chain``."""
    wallet = settings.refund_evm_wallet()
    assert wallet is not None
    keyed = settings.refund_evm_key() is not None
    pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, chain_id=chain.chain_id, timeout=seconds, transport=transport
    )
    try:
        wei = int(await pool.request("eth_getBalance", [wallet, "latest"]), 16)
        gas_price = int(await pool.request("eth_gasPrice", []), 16)
        data = "0x70a08231" + wallet[2:].rjust(64, "0")  # balanceOf(wallet)
        units = int(
            await pool.request("eth_call", [{"to": chain.usdc, "data": data}, "latest"]), 16
        )
    finally:
        await pool.aclose()
    return [
        _gas_row(chain.name, wallet, wei, gas_price, keyed),
        _usdc_row(chain.name, wallet, units),
    ]


def _gas_row(name: str, wallet: str, wei: int, gas_price: int, keyed: bool) -> Check:
    one = GAS_PER_REFUND * max(gas_price, 1)
    value = f"{wallet}: {wei / 10**18:.6f} ETH (~{wei // one} refunds of gas)"
    fix = f"send ETH to {wallet} on {name}"
    if wei < one:
        return Check(
            "refunds",
            f"{name} refund gas",
            "fail" if keyed else "warn",
            value,
            fix + (": the daemon cannot send refunds" if keyed else ""),
        )
    if wei < one * GAS_REFUNDS_WARN:
        return Check("refunds", f"{name} refund gas", "warn", value, fix)
    return Check("refunds", f"{name} refund gas", "ok", value)


def _usdc_row(name: str, wallet: str, units: int) -> Check:
    value = f"{wallet}: ${money.usd(units)} USDC"
    if units == 0:
        return Check(
            "refunds",
            f"{name} refund USDC",
            "warn",
            value,
            f"send USDC to {wallet} on {name}: refunds are paid from it",
        )
    return Check("refunds", f"{name} refund USDC", "ok", value)
