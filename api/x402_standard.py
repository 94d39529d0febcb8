"""Standard x402 on the paywall: what to sign (402), and checking what was signed.

The ``exact`` scheme on EVM: the payer signs an EIP-3009
``TransferWithAuthorization`` for exactly the price, to our address, over the
USDC EIP-712 domain of that chain, and sends it base64-encoded in
``PAYMENT-SIGNATURE`` (x402 v2) or ``X-PAYMENT`` (v1). The ``x402`` package
supplies the wire types, header names, the EIP-712 hash and the error reasons;
this module decides what we accept. Settlement is :mod:`api.x402_settle`.

Checks, in order, each refusal naming the spec's reason: the payload decodes
(``invalid_payload``), scheme and network are ones we offer, the accepted
requirements are ours (asset, payTo, amount), ``to`` is us, ``value`` is the
price, the window is open (``validBefore`` at least 6 s ahead, ``validAfter``
passed), and the signature recovers to ``from``. Balance, nonce and
simulation need the chain and the database: they follow in the settlement.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

import pydantic
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError as EthValidationError
from fastapi import Request
from x402.http import constants as x402_headers
from x402.http import utils as x402_http
from x402.mechanisms.evm import constants as evm_errors
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization, ExactEIP3009Payload
from x402.mechanisms.svm import constants as svm_constants
from x402.schemas import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
)
from x402.schemas.v1 import PaymentPayloadV1

from api import chains
from watcher import networks, settle
from watcher.settings import Settings

PAYMENT_REQUIRED = x402_headers.PAYMENT_REQUIRED_HEADER
PAYMENT_SIGNATURE = x402_headers.PAYMENT_SIGNATURE_HEADER
X_PAYMENT = x402_headers.X_PAYMENT_HEADER
PAYMENT_RESPONSE = x402_headers.PAYMENT_RESPONSE_HEADER
X_PAYMENT_RESPONSE = x402_headers.X_PAYMENT_RESPONSE_HEADER
MAX_HEADER_CHARS = 8192  # an exact EVM payload is ~1 KiB in base64
VALID_BEFORE_MARGIN_SECONDS = 6  # as the reference facilitator: room to get mined
MAX_TIMEOUT_SECONDS = 300
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


class Refused(Exception):
    """An x402 payment we will not settle: ``reason`` is the spec's error code."""

    def __init__(self, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.headers = headers or {}  # a failed settlement's PAYMENT-RESPONSE (success false)


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to pay with an x402 client: a chain we can settle on."""

    chain: chains.ChainInfo
    requirements: PaymentRequirements  # v2 shape; v1 is derived from it
    v1_network: str | None  # the v1 name of the network; None: offered to v2 clients only


@dataclass(frozen=True, slots=True)
class Verified:
    """A payload that passed every offline check."""

    version: int
    offer: Offer
    auth: settle.Authorization
    raw_payload: dict[str, Any]  # as received, for a facilitator
    requirements_json: dict[str, Any]  # what we asked, in the payload's protocol version


def settlement_configured(settings: Settings) -> bool:
    return settings.relayer_key() is not None or bool(settings.x402_facilitator_url)


def solana_fee_payer(settings: Settings, name: str = "solana") -> str | None:
    """Our fee payer's address when Solana `exact` can be settled (key, owner and RPC set)."""
    sol = settings.solana_chain(name)
    if sol.owner is None or not sol.rpc_urls:
        return None
    return settings.solana_fee_payer_address(name)


def solana_v1_network(settings: Settings, name: str = "solana") -> str | None:
    """The x402 v1 name of a Solana network as configured (``solana``, ``solana-devnet``),
    if its CAIP-2 id has one."""
    row = networks.by_caip2(settings.solana_chain(name).caip2)
    return row.x402_v1 if row is not None else None


def eip712_extra(settings: Settings, name: str) -> dict[str, Any]:
    """The token's EIP-712 domain name and version, as x402 clients read them from ``extra``."""
    domain_name, version = settings.evm_chain(name).eip712_domain
    return {"name": domain_name, "version": version}


def describe(request: Request, settings: Settings, cost: int) -> str:
    """The offer's description: how many calls, where, for how much."""
    usd = settings.x402_price_per_call * cost
    calls = "one call" if cost == 1 else f"{cost} calls"
    return f"{calls} to {request.url.path} (${usd})"


def offers(settings: Settings, cost: int = 1) -> list[Offer]:
    """What an x402 client can pay with for a route costing ``cost`` calls: the EVM chains
    we can settle an authorization on (an RPC URL and a relayer or facilitator), then
    Solana when our fee payer is set. The amount is the route's price, on every rail."""
    price = str(settings.price_per_call_units * cost)
    out = []
    for info in chains.all_chains(settings) if settlement_configured(settings) else []:
        if info.family != "evm" or not info.enabled or info.pay_to_display is None:
            continue
        if not settings.evm_chain(info.name).rpc_urls:
            continue
        req = PaymentRequirements(
            scheme="exact",
            network=f"eip155:{info.chain_id}",
            asset=info.asset_display,
            amount=price,
            pay_to=info.pay_to_display,
            max_timeout_seconds=MAX_TIMEOUT_SECONDS,
            extra=eip712_extra(settings, info.name),
        )
        out.append(Offer(info, req, info.network.x402_v1))
    for info in chains.all_chains(settings):
        fee_payer = solana_fee_payer(settings, info.name) if info.family == "solana" else None
        if fee_payer is None:
            continue
        req = PaymentRequirements(
            scheme="exact",
            network=info.caip2,
            asset=info.asset,
            amount=price,
            pay_to=info.pay_to or "",
            max_timeout_seconds=MAX_TIMEOUT_SECONDS,
            extra={"feePayer": fee_payer},
        )
        out.append(Offer(info, req, solana_v1_network(settings, info.name)))
    return out


def v1_requirements(
    request: Request, offer: Offer, settings: Settings, cost: int
) -> dict[str, Any]:
    req = offer.requirements
    return {
        "scheme": req.scheme,
        "network": offer.v1_network,
        "maxAmountRequired": req.amount,
        "resource": str(request.url),
        "description": describe(request, settings, cost),
        "mimeType": "application/json",
        "payTo": req.pay_to,
        "maxTimeoutSeconds": req.max_timeout_seconds,
        "asset": req.asset,
        "extra": {**req.extra, "decimals": 6},
    }


def payment_required_header(request: Request, error: str | None, cost: int = 1) -> str | None:
    """The v2 ``PAYMENT-REQUIRED`` header value (base64 JSON) for a route costing ``cost``
    calls, or None when nothing is offered."""
    settings: Settings = request.app.state.settings
    accepts = [o.requirements for o in offers(settings, cost)]
    if not accepts:
        return None
    required = PaymentRequired(
        x402_version=2,
        error=error,
        resource=ResourceInfo(
            url=str(request.url),
            description=describe(request, settings, cost),
            mime_type="application/json",
        ),
        accepts=accepts,
    )
    return x402_http.encode_payment_required_header(required)


# ---- checking a payment header ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matched:
    """A payment header decoded and matched to one of our offers, not yet checked."""

    version: int
    offer: Offer
    payload: dict[str, Any]  # the whole decoded header
    requirements_json: dict[str, Any]  # what we asked, in the payload's protocol version


def match(request: Request, header: str, version: int, cost: int = 1) -> Matched:
    """Decode a payment header and find the offer (for ``cost`` calls) it pays; raises
    :class:`Refused`."""
    settings: Settings = request.app.state.settings
    data = _decode(header, version)
    offer, requirements_json = _match(request, settings, data, version, cost)
    return Matched(version, offer, data, requirements_json)


def verify(request: Request, matched: Matched) -> Verified:
    """Check an EVM authorization offline; raises :class:`Refused`."""
    settings: Settings = request.app.state.settings
    version, offer, data = matched.version, matched.offer, matched.payload
    requirements_json = matched.requirements_json
    auth = _authorization(data.get("payload"))
    _check_terms(offer, auth)
    _check_signature(settings, offer, auth)
    return Verified(version, offer, auth, data, requirements_json)


def _decode(header: str, version: int) -> dict[str, Any]:
    if len(header) > MAX_HEADER_CHARS:
        raise Refused("invalid_payload", f"the payment header is over {MAX_HEADER_CHARS} chars")
    try:
        data = json.loads(base64.b64decode(header, validate=True))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        model = PaymentPayload if version == 2 else PaymentPayloadV1
        model.model_validate(data)
    except (binascii.Error, ValueError, pydantic.ValidationError) as exc:
        raise Refused(
            "invalid_payload", f"the payment header is not a base64 x402 v{version} payload"
        ) from exc
    if data.get("x402Version") != version:
        raise Refused(
            "invalid_x402_version",
            f"{'PAYMENT-SIGNATURE' if version == 2 else 'X-PAYMENT'} carries x402Version "
            f"{version}, this payload says {data.get('x402Version')!r}",
        )
    return data


def _match(
    request: Request, settings: Settings, data: dict[str, Any], version: int, cost: int
) -> tuple[Offer, dict[str, Any]]:
    if version == 2:
        accepted = PaymentPayload.model_validate(data).accepted
        scheme, network = accepted.scheme, accepted.network
    else:
        v1 = PaymentPayloadV1.model_validate(data)
        scheme, network = v1.scheme, v1.network
    if scheme != "exact":
        raise Refused(evm_errors.ERR_UNSUPPORTED_SCHEME, f"scheme {scheme!r} is not offered here")
    for offer in offers(settings, cost):
        if network == (offer.requirements.network if version == 2 else offer.v1_network):
            break
    else:
        raise Refused("invalid_network", f"network {network!r} is not offered here")
    if version == 1:
        return offer, v1_requirements(request, offer, settings, cost)
    ours = offer.requirements
    if offer.chain.family == "solana":  # base58 is case-sensitive
        theirs = (accepted.asset, accepted.pay_to, accepted.amount)
        mine = (ours.asset, ours.pay_to, ours.amount)
        theirs_fee_payer = (accepted.extra or {}).get("feePayer")
        if theirs_fee_payer != ours.extra["feePayer"]:
            raise Refused(
                svm_constants.ERR_FEE_PAYER_NOT_MANAGED,
                f"the fee payer {theirs_fee_payer!r} is not ours; pay the 402 again",
            )
    else:
        theirs = (accepted.asset.lower(), accepted.pay_to.lower(), accepted.amount)
        mine = (ours.asset.lower(), ours.pay_to.lower(), ours.amount)
    if theirs != mine:
        raise Refused(
            "invalid_payment_requirements",
            "the accepted requirements are not the ones this server offers; pay the 402 again",
        )
    return offer, ours.model_dump(by_alias=True, exclude_none=True)


def _authorization(payload: Any) -> settle.Authorization:
    try:
        parsed = ExactEIP3009Payload.from_dict(payload if isinstance(payload, dict) else {})
        a = parsed.authorization
        nonce = bytes.fromhex(a.nonce.removeprefix("0x"))
        sig = bytes.fromhex((parsed.signature or "").removeprefix("0x"))
        if len(nonce) != 32 or len(sig) != 65:
            raise ValueError("nonce must be 32 bytes and signature 65 bytes")
        auth = settle.Authorization(
            payer=_address(a.from_address),
            pay_to=_address(a.to),
            value=int(a.value),
            valid_after=int(a.valid_after),
            valid_before=int(a.valid_before),
            nonce=nonce,
            signature=sig,
        )
    except (ValueError, TypeError, AttributeError) as exc:  # wrong JSON types included
        raise Refused(
            "invalid_payload", f"the exact EVM authorization is malformed ({exc})"
        ) from exc
    if not all(0 <= n < 2**256 for n in (auth.value, auth.valid_after, auth.valid_before)):
        raise Refused("invalid_payload", "authorization numbers must fit in uint256")
    return auth


def _address(value: str) -> str:
    text = value.lower()
    if len(text) != 42 or not text.startswith("0x"):
        raise ValueError(f"{value!r} is not an address")
    int(text, 16)
    return text


def _check_terms(offer: Offer, auth: settle.Authorization) -> None:
    if auth.pay_to != (offer.chain.pay_to or ""):
        raise Refused(evm_errors.ERR_RECIPIENT_MISMATCH, "the authorization pays someone else")
    price = int(offer.requirements.amount)
    if auth.value != price:
        raise Refused(
            evm_errors.ERR_AUTHORIZATION_VALUE_MISMATCH,
            f"the authorization is for {auth.value} base units; the price is {price}",
        )
    now = int(time.time())
    if auth.valid_before < now + VALID_BEFORE_MARGIN_SECONDS:
        raise Refused(evm_errors.ERR_VALID_BEFORE_EXPIRED, "the authorization has expired")
    if auth.valid_after > now:
        raise Refused(evm_errors.ERR_VALID_AFTER_FUTURE, "the authorization is not valid yet")


def _check_signature(settings: Settings, offer: Offer, auth: settle.Authorization) -> None:
    digest = hash_eip3009_authorization(
        ExactEIP3009Authorization(
            from_address=auth.payer,
            to=auth.pay_to,
            value=str(auth.value),
            valid_after=str(auth.valid_after),
            valid_before=str(auth.valid_before),
            nonce="0x" + auth.nonce.hex(),
        ),
        offer.chain.chain_id or 0,
        offer.chain.asset_display,
        *settings.evm_chain(offer.chain.name).eip712_domain,
    )
    sig = auth.signature
    v = sig[64] - 27 if sig[64] >= 27 else sig[64]
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
    try:
        if v not in (0, 1) or s > _HALF_N:  # USDC refuses high-s twins
            raise ValueError("non-canonical signature")
        signer = Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
    except (ValueError, BadSignature, EthValidationError) as exc:
        raise Refused(evm_errors.ERR_INVALID_SIGNATURE, "the signature does not verify") from exc
    if signer.to_address().lower() != auth.payer:
        raise Refused(
            evm_errors.ERR_INVALID_SIGNATURE,
            "the signature is not the payer's over this authorization and USDC domain",
        )


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
