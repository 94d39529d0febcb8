"""Doctor rows for the Solana refund wallet: SOL for fees and rent, USDC to give back.

The wallet is ``X402_REFUND_SOLANA_KEYPAIR``'s (refunds we sign) or
``X402_REFUND_SOLANA_ADDRESS`` (refunds exported for a hardware wallet or a
multisig): either way it pays each refund's fee, the rent of a payer's token
account it has to create, and the USDC from its associated token account. As for
the EVM wallet (:mod:`watcher.doctor.refunds`): with the keypair, SOL short of one
refund is a ✗ (refunds would stay ``requested``); with only an address it is a ⚠
(that wallet pays when it signs).
"""

from __future__ import annotations

import httpx

from watcher import money, rpc
from watcher.doctor.report import Check
from watcher.refunds import solana
from watcher.settings import Settings, SolanaChain

GROUP = "refunds"
ACCOUNT_RENT = 2_039_280  # a token account's rent-exempt minimum (165 bytes)
FLOOR = solana.SIGNATURE_FEE + solana.WALLET_RENT_MINIMUM  # one refund to an existing account
COMFORT = FLOOR + 5 * (ACCOUNT_RENT + solana.SIGNATURE_FEE)  # five to payers without one


def wallet(settings: Settings) -> str | None:
    """The refund wallet's address; None when unset or unreadable (the settings rows say)."""
    try:
        return settings.refund_solana_address()
    except ValueError:
        return None


async def wallet_rows(
    chain: SolanaChain,
    address: str,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    keyed: bool = True,
) -> list[Check]:
    """The refund wallet's SOL (fees, rent) and its USDC token account's balance."""
    pool = rpc.RpcPool(
        chain.name, chain.rpc_urls, timeout=seconds, transport=transport, kind="solana"
    )
    account = solana.associated(address, chain.usdc_mint)
    try:
        answer = await pool.request("getBalance", [address, {"commitment": "confirmed"}])
        units = await solana.token_balance(pool, account)
    finally:
        await pool.aclose()
    lamports = int(answer["value"])
    rows = []
    name = f"{chain.name} refund SOL"
    shown = f"{address}: {lamports / 1e9:.6f} SOL"
    fix = f"send SOL to {address}; each refund pays a fee, and the rent of a new token account"
    if lamports < FLOOR:
        why = "the daemon cannot send refunds" if keyed else "it cannot pay for a refund"
        rows.append(Check(GROUP, name, "fail" if keyed else "warn", shown, f"{why}: {fix}"))
    elif lamports < COMFORT:
        rows.append(Check(GROUP, name, "warn", shown, f"below {COMFORT / 1e9:.4f} SOL: {fix}"))
    else:
        rows.append(Check(GROUP, name, "ok", shown))
    name = f"{chain.name} refund USDC"
    shown = f"{account}: ${money.usd(units)} USDC"
    if units <= 0:
        fix = f"send USDC to {address} (its associated token account {account}) before refunding"
        rows.append(Check(GROUP, name, "warn", shown, fix))
    else:
        rows.append(Check(GROUP, name, "ok", shown))
    return rows
