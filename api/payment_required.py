"""The 402 answer a paid route gives: what to pay, where, and how to buy a token here.

The body is the x402 v1 ``accepts`` list (one entry per enabled network that a
v1 client can pay on) plus our invoice endpoint and the ways to pay by
subscription; x402 v2 clients get the same offer in the ``PAYMENT-REQUIRED``
header (``api/x402/offers.py``). Whether a call is refused is decided by the
paywall (``api/paywall.py``); this module only words the refusal.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api import chains
from api.errors import ApiError
from api.x402 import offers
from watcher import networks
from watcher.settings import Settings

TOKEN_HEADER = "x-payment-token"  # where a bought token travels; every 402 names it
PAYMENT_TIMEOUT_SECONDS = 600  # maxTimeoutSeconds in the x402 body


def refusal(
    request: Request, error: str, message: str, cost: int, ways_to_pay: dict[str, Any]
) -> ApiError:
    """The 402 for ``cost`` calls of this route: the v1 body with ``ways_to_pay`` (the
    subscription tiers, ``entitlements.how_to_pay``) and, for x402 v2 clients, the header."""
    body = payment_required_body(request, error, message, cost)
    body.update(ways_to_pay)
    settings: Settings = request.app.state.settings
    v2 = offers.payment_required_header(settings, request.url, error, cost)  # for x402 v2 clients
    headers = {offers.PAYMENT_REQUIRED: v2} if v2 else {}
    return ApiError(
        402, body.pop("error"), body.pop("message"), body.pop("fix"), headers=headers, **body
    )


def payment_required_body(
    request: Request, error: str, message: str, cost: int = 1
) -> dict[str, Any]:
    """The x402 v1 ``accepts`` list for this resource (``cost`` calls' price), plus how to
    buy a token here."""
    settings: Settings = request.app.state.settings
    price = settings.price_per_call_units * cost
    accepts = [
        _v1_accept(request, settings, c, cost, price)
        for c in chains.all_chains(settings)
        if c.enabled and (c.family == "solana" or c.network.x402_v1 is not None)
    ]
    invoices = str(request.url_for("create_invoice"))
    suggested = next((c.name for c in chains.all_chains(settings) if c.enabled), networks.NAMES[0])
    return {
        "x402Version": 1,
        "error": error,
        "message": message,
        "fix": f"create an invoice with POST {invoices}, pay it, claim a token with "
        f"POST /x402/generate-token and send it in the {TOKEN_HEADER} header",
        "accepts": accepts,
        "invoice": {
            "method": "POST",
            "url": invoices,
            "body": {"chain": suggested, "requests": 10},
        },
    }


def _v1_accept(
    request: Request, settings: Settings, c: chains.ChainInfo, cost: int, price: int
) -> dict[str, Any]:
    """One entry of the v1 ``accepts`` list. EVM: the USDC EIP-712 domain an x402 client
    signs against; Solana: our fee payer, where a v1 client can pay with it (a network with
    a v1 name) and we settle x402 transactions there (api/x402/svm_settle.py)."""
    if c.family == "evm":
        network = c.network.x402_v1 or c.name
        extra: dict[str, Any] = {**offers.eip712_extra(settings, c.name), "decimals": 6}
    else:
        v1 = offers.solana_v1_network(settings, c.name)
        network = v1 or c.network.x402_v1 or c.name
        fee_payer = offers.solana_fee_payer(settings, c.name) if v1 else None
        extra = {"decimals": 6, **({"feePayer": fee_payer} if fee_payer else {})}
    return {
        "scheme": "exact",
        "network": network,
        "maxAmountRequired": str(price),
        "resource": str(request.url),
        "description": offers.describe(settings, request.url.path, cost),
        "mimeType": "application/json",
        "payTo": c.pay_to_display,
        "maxTimeoutSeconds": PAYMENT_TIMEOUT_SECONDS,
        "asset": c.asset_display,
        "extra": extra,
    }
