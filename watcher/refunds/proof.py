"""Who may receive a refund: the payment's source, or an address the payer proves.

* ``source``: the address the payment came from (``from_address``). Refused when that
  address is a contract (an exchange's hot wallet, a router): nobody may control the
  money sent back there. The caller checks the code (``eth_getCode``) before the
  transaction; :func:`contract_refusal` is the answer.
* ``signature``: an EIP-191 ``personal_sign`` by the payment's ``from_address`` over
  :func:`message`, which names the chain, the payment (tx hash and log index), the
  destination and the amount, so it cannot be replayed for another refund.
* ``claim_secret``: the invoice's claim secret (only the payer holds it), compared with
  its stored SHA-256 in constant time as claims do.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_defunct

from watcher import keys
from watcher.refunds import model


def message(chain: str, tx_hash: str, log_index: int, destination: str, amount: int) -> str:
    """The exact text a payer signs to send a refund of their payment elsewhere."""
    return (
        "Refund my USDC payment to another address\n"
        f"chain: {chain}\n"
        f"payment: {tx_hash}:{log_index}\n"
        f"to: {destination.lower()}\n"
        f"amount: {amount}"
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    """What the operator passed on from the payer."""

    destination: str | None = None  # None = back to the source
    signature: str | None = None
    claim_secret: str | None = None
    amount: int | None = None  # the amount the payer signed for


def recover(text: str, signature: str) -> str | None:
    """The EOA that personal_signed ``text`` (lowercase), or None."""
    try:
        raw = bytes.fromhex(signature.strip().removeprefix("0x"))
    except ValueError:
        return None
    if len(raw) != 65:
        return None
    try:
        signer: str = Account.recover_message(encode_defunct(text=text), signature=raw)
    except Exception:  # eth-keys raises bare errors for junk input
        return None
    return signer.lower()


def judge(
    *,
    chain: str,
    tx_hash: str,
    log_index: int,
    source: str | None,
    secret_hash: bytes | None,
    given: Claimed,
) -> tuple[str, str]:
    """(destination, proof) for an EVM payment, or :class:`model.Refused`."""
    dest = (given.destination or "").strip().lower() or None
    if dest is not None and not _is_address(dest):
        raise model.Refused(
            422,
            "invalid_destination",
            "the destination is not an EVM address",
            "give 0x and 40 hex digits",
        )
    if dest is None or dest == source:
        if source is None:
            raise model.Refused(
                409,
                "no_source",
                "the payment's sender is not known",
                "name a destination and prove it (signature or claim secret)",
            )
        return source, "source"
    if given.claim_secret:
        if secret_hash is None or not hmac.compare_digest(
            keys.sha256(given.claim_secret), bytes(secret_hash)
        ):
            raise model.Refused(
                403,
                "bad_proof",
                "the claim secret does not match the invoice's",
                "pass the claim_secret the invoice was created with",
            )
        return dest, "claim_secret"
    if given.signature:
        if given.amount is None:
            raise model.Refused(
                422,
                "amount_required",
                "a signed destination names the amount: pass the same amount",
                "send amount (base units) as the payer signed it",
            )
        signer = recover(message(chain, tx_hash, log_index, dest, given.amount), given.signature)
        if signer is None or signer != source:
            raise model.Refused(
                403,
                "bad_proof",
                "the signature is not the payment's sender's over this refund",
                "have the sender personal_sign the refund message (docs)",
            )
        return dest, "signature"
    raise model.Refused(
        403,
        "proof_required",
        "a refund to another address than the sender needs the payer's proof",
        "pass signature (personal_sign of the refund message) or claim_secret",
    )


def judge_other(
    *, source: str | None, secret_hash: bytes | None, given: Claimed
) -> tuple[str, str]:
    """(destination, proof) on a family without a signed-destination check here (Solana):
    the source, or an address proven by the invoice's claim secret."""
    dest = (given.destination or "").strip() or None
    if dest is None or dest == source:
        if source is None:
            raise model.Refused(
                409,
                "no_source",
                "the payment's sender is not known",
                "name a destination and prove it with the claim secret",
            )
        return source, "source"
    if (
        given.claim_secret
        and secret_hash is not None
        and hmac.compare_digest(keys.sha256(given.claim_secret), secret_hash)
    ):
        return dest, "claim_secret"
    raise model.Refused(
        403,
        "bad_proof" if given.claim_secret else "proof_required",
        "a refund to another address than the sender needs the payer's proof",
        "pass the invoice's claim_secret",
    )


def contract_refusal(source: str) -> model.Refused:
    """The answer for a source that is a contract and no proof of another address."""
    return model.Refused(
        409,
        "source_is_contract",
        f"the payment came from {source}, a contract (an exchange's hot wallet or a router): "
        "money sent back there may reach nobody who paid",
        "ask the payer for an address they control, signed by the sender's key "
        "(signature over the refund message) or proven with the invoice's claim_secret",
    )


def _is_address(text: str) -> bool:
    body = text.removeprefix("0x")
    return text.startswith("0x") and len(body) == 40 and all(c in "0123456789abcdef" for c in body)
