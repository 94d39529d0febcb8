"""The ``exact`` scheme on EVM, checked offline: an EIP-3009 authorization for our price.

The payer signs ``TransferWithAuthorization`` for exactly the price, to our
address, over the USDC EIP-712 domain of that chain. The ``x402`` package
supplies the EIP-712 hash and the error reasons; this module decides what we
accept. Checks, in order, each refusal naming the spec's reason: the
authorization parses (``invalid_payload``), ``to`` is us, ``value`` is the
price, the window is open (``validBefore`` at least 6 s ahead, ``validAfter``
passed), and the signature recovers to ``from``. Balance, nonce and
simulation need the chain and the database: they follow in
:mod:`api.x402.evm_settle`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError as EthValidationError
from x402.mechanisms.evm import constants as evm_errors
from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
from x402.mechanisms.evm.types import ExactEIP3009Authorization, ExactEIP3009Payload

from api.x402 import offers
from api.x402.errors import Refused
from api.x402.payload import Matched
from watcher.settings import Settings

VALID_BEFORE_MARGIN_SECONDS = 6  # as the reference facilitator: room to get mined
_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


@dataclass(frozen=True, slots=True)
class Authorization:
    """An EIP-3009 authorization, parsed: addresses lowercase, integers, raw signature."""

    payer: str
    pay_to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Verified:
    """A payload that passed every offline check."""

    version: int
    offer: offers.Offer
    auth: Authorization
    raw_payload: dict[str, Any]  # as received, for a facilitator
    requirements_json: dict[str, Any]  # what we asked, in the payload's protocol version


def verify(settings: Settings, matched: Matched) -> Verified:
    """Check an EVM authorization offline; raises :class:`Refused`."""
    version, offer, data = matched.version, matched.offer, matched.payload
    auth = _authorization(data.get("payload"))
    _check_terms(offer, auth)
    _check_signature(settings, offer, auth)
    return Verified(version, offer, auth, data, matched.requirements_json)


def _authorization(payload: Any) -> Authorization:
    try:
        parsed = ExactEIP3009Payload.from_dict(payload if isinstance(payload, dict) else {})
        a = parsed.authorization
        nonce = bytes.fromhex(a.nonce.removeprefix("0x"))
        sig = bytes.fromhex((parsed.signature or "").removeprefix("0x"))
        if len(nonce) != 32 or len(sig) != 65:
            raise ValueError("nonce must be 32 bytes and signature 65 bytes")
        auth = Authorization(
            payer=_address(a.from_address),
            pay_to=_address(a.to),
            value=int(a.value),
            valid_after=int(a.valid_after),
            valid_before=int(a.valid_before),
            nonce=nonce,
            signature=sig,
        )
    except (ValueError, TypeError, AttributeError) as exc:  # wrong JSON types included
        raise Refused(  # not an exact EVM payload at all: the transport spec's 400
            "invalid_payload", f"the exact EVM authorization is malformed ({exc})", status=400
        ) from exc
    if not all(0 <= n < 2**256 for n in (auth.value, auth.valid_after, auth.valid_before)):
        raise Refused("invalid_payload", "authorization numbers must fit in uint256", status=400)
    return auth


def _address(value: str) -> str:
    text = value.lower()
    if len(text) != 42 or not text.startswith("0x"):
        raise ValueError(f"{value!r} is not an address")
    int(text, 16)
    return text


def _check_terms(offer: offers.Offer, auth: Authorization) -> None:
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


def _check_signature(settings: Settings, offer: offers.Offer, auth: Authorization) -> None:
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
