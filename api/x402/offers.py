"""What an x402 client can pay with: the ``accepts`` list, the 402's headers, the answers.

The ``exact`` scheme on each chain we can settle on: EVM networks with an RPC
URL and a relayer or facilitator (the payer signs an EIP-3009 authorization
over the USDC EIP-712 domain named in ``extra``), and Solana when our fee
payer is set (``extra.feePayer``). The amount is the route's price on every
rail. The v2 ``PAYMENT-REQUIRED`` header lists the offers; a v1 client reads
:func:`v1_requirements`. After settlement, ``PAYMENT-RESPONSE`` (v2) or
``X-PAYMENT-RESPONSE`` (v1) carries the outcome, success or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import URL
from x402.http import constants as x402_headers
from x402.http import utils as x402_http
from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse

from api import chains
from api.price import Price
from api.x402.errors import Refused
from watcher import networks
from watcher.settings import Settings

PAYMENT_REQUIRED = x402_headers.PAYMENT_REQUIRED_HEADER
PAYMENT_SIGNATURE = x402_headers.PAYMENT_SIGNATURE_HEADER
X_PAYMENT = x402_headers.X_PAYMENT_HEADER
PAYMENT_RESPONSE = x402_headers.PAYMENT_RESPONSE_HEADER
X_PAYMENT_RESPONSE = x402_headers.X_PAYMENT_RESPONSE_HEADER
MAX_TIMEOUT_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to pay with an x402 client: a chain we can settle on."""

    chain: chains.ChainInfo
    requirements: PaymentRequirements  # v2 shape; v1 is derived from it
    v1_network: str | None  # the v1 name of the network; None: offered to v2 clients only

    @property
    def family(self) -> networks.Family:
        """``evm`` or ``solana``: which verifier and settlement take this offer."""
        return self.chain.family


def settlement_configured(settings: Settings) -> bool:
    return settings.relayer_key() is not None or bool(settings.x402_facilitator_url)


def solana_fee_payer(settings: Settings, name: str) -> str | None:
    """Our fee payer's address when Solana `exact` can be settled (key, owner and RPC set)."""
    sol = settings.solana_chain(name)
    if sol.owner is None or not sol.rpc_urls:
        return None
    return settings.solana_fee_payer_address(name)


def solana_v1_network(settings: Settings, name: str) -> str | None:
    """The x402 v1 name of a Solana network as configured (``solana``, ``solana-devnet``),
    if its CAIP-2 id has one."""
    row = networks.by_caip2(settings.solana_chain(name).caip2)
    return row.x402_v1 if row is not None else None


def eip712_extra(settings: Settings, name: str) -> dict[str, Any]:
    """The token's EIP-712 domain name and version, as x402 clients read them from ``extra``."""
    domain_name, version = settings.evm_chain(name).eip712_domain
    return {"name": domain_name, "version": version}


def offers(settings: Settings, price: Price) -> list[Offer]:
    """What an x402 client can pay with for a route costing ``price``: the EVM networks
    we can settle an authorization on (an RPC URL and a relayer or facilitator), then the
    Solana networks where our fee payer is set. The amount is the route's price, on every
    rail; the ``asset`` as that family's wallets spell it (EVM checksummed)."""
    amount = str(price.units)
    out = []
    for info in chains.all_chains(settings) if settlement_configured(settings) else []:
        if info.family != "evm" or not info.enabled:
            continue
        if info.pay_to_display is None or not settings.evm_chain(info.name).rpc_urls:
            continue
        extra = eip712_extra(settings, info.name)
        out.append(Offer(info, _requirements(info, amount, extra), info.network.x402_v1))
    for info in chains.all_chains(settings):
        fee_payer = solana_fee_payer(settings, info.name) if info.family == "solana" else None
        if fee_payer is None:
            continue
        req = _requirements(info, amount, {"feePayer": fee_payer})
        out.append(Offer(info, req, solana_v1_network(settings, info.name)))
    return out


def _requirements(
    info: chains.ChainInfo, amount: str, extra: dict[str, Any]
) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact",
        network=info.caip2,
        asset=info.asset_display,
        amount=amount,
        pay_to=info.pay_to_display or "",
        max_timeout_seconds=MAX_TIMEOUT_SECONDS,
        extra=extra,
    )


def v1_requirements(url: URL, offer: Offer, price: Price) -> dict[str, Any]:
    """The offer as an x402 v1 ``accepts`` entry for the resource at ``url``."""
    req = offer.requirements
    return {
        "scheme": req.scheme,
        "network": offer.v1_network,
        "maxAmountRequired": req.amount,
        "resource": str(url),
        "description": price.describe(url.path),
        "mimeType": "application/json",
        "payTo": req.pay_to,
        "maxTimeoutSeconds": req.max_timeout_seconds,
        "asset": req.asset,
        "extra": {**req.extra, "decimals": 6},
    }


def payment_required_header(
    settings: Settings, url: URL, price: Price, message: str | None, code: str | None = None
) -> str | None:
    """The v2 ``PAYMENT-REQUIRED`` header value (base64 JSON) for the route at ``url``
    costing ``price``, or None when nothing is offered. ``error`` is the human-readable
    ``message`` the transport spec asks for; our machine code travels in
    ``extensions.watcher.code``."""
    accepts = [o.requirements for o in offers(settings, price)]
    if not accepts:
        return None
    required = PaymentRequired(
        x402_version=2,
        error=message,
        resource=ResourceInfo(
            url=str(url),
            description=price.describe(url.path),
            mime_type="application/json",
        ),
        accepts=accepts,
        extensions={"watcher": {"code": code}} if code else None,
    )
    return x402_http.encode_payment_required_header(required)


def failure(
    version: int,
    requirements_json: dict[str, Any],
    payer: str,
    reason: str,
    message: str,
    transaction: str = "",
) -> Refused:
    """A settlement refusal carrying the spec's PAYMENT-RESPONSE with success false."""
    response = SettleResponse(
        success=False,
        error_reason=reason,
        error_message=message,
        transaction=transaction,
        network=requirements_json["network"],
        payer=payer,
    )
    return Refused(reason, message, response_header(version, response))


def response_header(version: int, settled: SettleResponse) -> dict[str, str]:
    """``PAYMENT-RESPONSE`` (v2) or ``X-PAYMENT-RESPONSE`` (v1) for a SettleResponse."""
    name = PAYMENT_RESPONSE if version == 2 else X_PAYMENT_RESPONSE
    return {name: x402_http.encode_payment_response_header(settled)}
