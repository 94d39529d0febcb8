"""The 402 answer a paid route gives: what to pay, where, and how to buy a token here.

The body is the x402 v1 ``accepts`` list (one entry per enabled network that a
v1 client can pay on) plus our invoice endpoint and the ways to pay by
subscription; x402 v2 clients get the same offer in the ``PAYMENT-REQUIRED``
header (``api/x402/offers.py``). Whether a call is refused is decided by the
paywall (``api/paywall.py``); this module only words the refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import URL

from api import chains
from api.errors import ApiError
from api.price import ALL_RAILS, Price
from api.x402 import offers
from watcher import money
from watcher.settings import Settings

TOKEN_HEADER = "x-payment-token"  # where a bought token travels; every 402 names it
# One payment window for every offer of one 402: the v1 body and the v2 header agree.
PAYMENT_TIMEOUT_SECONDS = offers.MAX_TIMEOUT_SECONDS
# A 402 is about this request and this moment: never cached (as the reference servers do).
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Asked:
    """What the payer asked for: the resource, its price, and the rails it may be paid on."""

    url: URL  # the public URL of the resource (an x402 offer's ``resource``)
    invoice_url: str  # where to create an invoice (our token rail)
    price: Price
    rails: frozenset[str] = ALL_RAILS
    tiers: frozenset[str] | None = None  # subscriber tiers allowed; None: any


def refusal(
    settings: Settings,
    asked: Asked,
    error: str,
    message: str,
    ways_to_pay: dict[str, Any],
    *,
    status: int = 402,
) -> ApiError:
    """The 402 for ``asked``: the v1 body with ``ways_to_pay`` (the subscription tiers,
    ``entitlements.how_to_pay``) and, for x402 v2 clients, the header; only the rails the
    route takes are offered."""
    body = payment_required_body(settings, asked, error, message)
    body.update(_ways(ways_to_pay, asked))
    offered = body["accepts"] or "invoice" in body
    if not offered and {"x402", "token"} & asked.rails and not _payable(settings):
        body["fix"] = _nothing_to_pay_on(body["ways_to_pay"])
    headers = dict(NO_STORE)
    if "x402" in asked.rails:
        v2 = offers.payment_required_header(settings, asked.url, asked.price, message, error)
        if v2:
            headers[offers.PAYMENT_REQUIRED] = v2
    return ApiError(
        status, body.pop("error"), body.pop("message"), body.pop("fix"), headers=headers, **body
    )


def _payable(settings: Settings) -> list[str]:
    """The networks that take payments here (a receiving address is set), registry order."""
    return [c.name for c in chains.all_chains(settings) if c.enabled]


def _nothing_to_pay_on(ways: list[dict[str, Any]]) -> str:
    """The fix of a 402 that can offer no network: say so, instead of offering one that
    the invoice endpoint would then refuse."""
    none = "this server has no network to pay USDC on (none is configured: its operator "
    none += "sets X402_<NETWORK>_PAYMENT_ADDRESS)"
    if ways:
        return f"{none}; subscribe instead (ways_to_pay)"
    return f"{none}, so nothing can be bought here yet"


def _ways(ways_to_pay: dict[str, Any], asked: Asked) -> dict[str, Any]:
    """The ways to pay a route takes: the token rail (our invoice, then a token) when it
    is accepted and the price is whole calls, a subscription of an allowed tier."""
    kept = []
    for way in ways_to_pay.get("ways_to_pay", []):
        if way.get("method") == "subscription":
            if "subscription" not in asked.rails or asked.price.calls is None:
                continue
            if asked.tiers is not None:
                tiers = [t for t in way.get("tiers", []) if t["tier"] in asked.tiers]
                way = {**way, "tiers": tiers, "tiers_allowed": sorted(asked.tiers)}
        elif "token" not in asked.rails or asked.price.calls is None:
            continue
        kept.append(way)
    return {"ways_to_pay": kept}


def payment_required_body(
    settings: Settings, asked: Asked, error: str, message: str
) -> dict[str, Any]:
    """The x402 v1 ``accepts`` list for this resource at its price, plus how to buy a
    token here (when the route takes tokens)."""
    accepts = (
        [
            _v1_accept(settings, asked, c)
            for c in chains.all_chains(settings)
            if c.enabled and (c.family == "solana" or c.network.x402_v1 is not None)
        ]
        if "x402" in asked.rails
        else []
    )
    body: dict[str, Any] = {
        "x402Version": 1,
        "error": error,
        "message": message,
        "fix": "pay with an x402 client: the accepts list (v1) or the PAYMENT-REQUIRED "
        "header (v2) says what and where",
        "accepts": accepts,
        "price_usd": money.usd(asked.price.units),
    }
    if asked.price.calls is not None:
        body["calls"] = asked.price.calls
    # The invoice suggests a network that takes payments here; with none, no invoice.
    takes_tokens = "token" in asked.rails and asked.price.calls is not None
    payable = _payable(settings) if takes_tokens else []
    if payable and asked.price.calls is not None:
        body["fix"] = (
            f"create an invoice with POST {asked.invoice_url}, pay it, claim a token with "
            f"POST /x402/generate-token and send it in the {TOKEN_HEADER} header"
        )
        body["invoice"] = {
            "method": "POST",
            "url": asked.invoice_url,
            "body": {"chain": payable[0], "requests": _suggested_requests(settings, asked)},
        }
    return body


def _suggested_requests(settings: Settings, asked: Asked) -> int:
    """Ten times the route's calls, raised to the invoice minimum (api/invoices.py refuses
    less, and the 402 must not suggest an invoice the server then refuses)."""
    assert asked.price.calls is not None
    price = settings.price_per_call_units
    at_least = -(-max(settings.min_payment_units, price) // price)  # whole calls, rounded up
    return max(10 * asked.price.calls, at_least)


def _v1_accept(settings: Settings, asked: Asked, c: chains.ChainInfo) -> dict[str, Any]:
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
        "maxAmountRequired": str(asked.price.units),
        "resource": str(asked.url),
        "description": asked.price.describe(asked.url.path),
        "mimeType": "application/json",
        "payTo": c.pay_to_display,
        "maxTimeoutSeconds": PAYMENT_TIMEOUT_SECONDS,
        "asset": c.asset_display,
        "extra": extra,
    }
