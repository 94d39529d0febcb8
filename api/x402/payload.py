"""A payment header, decoded and matched to the offer it pays (nothing checked yet).

``PAYMENT-SIGNATURE`` (x402 v2) or ``X-PAYMENT`` (v1) carries base64 JSON. It
must decode as a payload of that version (``invalid_payload``,
``invalid_x402_version``), name the ``exact`` scheme and a network we offer,
and, in v2, accept exactly our requirements (asset, payTo, amount and, on
Solana, our fee payer). The family's verifier (:mod:`api.x402.evm`,
:mod:`api.x402.svm_decode`) then checks what was signed.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import pydantic
from starlette.datastructures import URL
from x402.mechanisms.evm import constants as evm_errors
from x402.mechanisms.svm import constants as svm_constants
from x402.schemas import PaymentPayload
from x402.schemas.v1 import PaymentPayloadV1

from api.price import Price
from api.x402 import offers
from api.x402.errors import Refused
from watcher.settings import Settings

MAX_HEADER_CHARS = 8192  # an exact EVM payload is ~1 KiB in base64


@dataclass(frozen=True, slots=True)
class Matched:
    """A payment header decoded and matched to one of our offers, not yet checked."""

    version: int
    offer: offers.Offer
    payload: dict[str, Any]  # the whole decoded header
    requirements_json: dict[str, Any]  # what we asked, in the payload's protocol version


def match(settings: Settings, url: URL, header: str, version: int, price: Price) -> Matched:
    """Decode a payment header and find the offer (for ``price``, the route at ``url``)
    it pays; raises :class:`Refused`."""
    data = _decode(header, version)
    offer, requirements_json = _match(settings, url, data, version, price)
    return Matched(version, offer, data, requirements_json)


def _decode(header: str, version: int) -> dict[str, Any]:
    if len(header) > MAX_HEADER_CHARS:
        raise Refused(
            "invalid_payload", f"the payment header is over {MAX_HEADER_CHARS} chars", status=400
        )
    try:
        data = json.loads(base64.b64decode(header, validate=True))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        model = PaymentPayload if version == 2 else PaymentPayloadV1
        model.model_validate(data)
    except (binascii.Error, ValueError, pydantic.ValidationError) as exc:
        raise Refused(
            "invalid_payload",
            f"the payment header is not a base64 x402 v{version} payload",
            status=400,
        ) from exc
    if data.get("x402Version") != version:
        raise Refused(
            "invalid_x402_version",
            f"{'PAYMENT-SIGNATURE' if version == 2 else 'X-PAYMENT'} carries x402Version "
            f"{version}, this payload says {data.get('x402Version')!r}",
            status=400,
        )
    return data


def _match(
    settings: Settings, url: URL, data: dict[str, Any], version: int, price: Price
) -> tuple[offers.Offer, dict[str, Any]]:
    if version == 2:
        accepted = PaymentPayload.model_validate(data).accepted
        scheme, network = accepted.scheme, accepted.network
    else:
        v1 = PaymentPayloadV1.model_validate(data)
        scheme, network = v1.scheme, v1.network
    if scheme != "exact":
        raise Refused(evm_errors.ERR_UNSUPPORTED_SCHEME, f"scheme {scheme!r} is not offered here")
    for offer in offers.offers(settings, price):
        if network == (offer.requirements.network if version == 2 else offer.v1_network):
            break
    else:
        raise Refused("invalid_network", f"network {network!r} is not offered here")
    if version == 1:
        return offer, offers.v1_requirements(url, offer, price)
    ours = offer.requirements
    if offer.family == "solana":  # base58 is case-sensitive
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
