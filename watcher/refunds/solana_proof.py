"""Who may receive a Solana refund: the payment's source, or an address the payer proves.

The Solana counterpart of :mod:`watcher.refunds.proof` (same answers, same errors):

* ``source``: the wallet whose USDC went down (``from_address``). Refused when it is
  off the Ed25519 curve: a program-derived address (a program's vault, a router) has no
  key, only the program that derived it can move what is sent there, and that may be
  nobody who paid.
* ``signature``: the source wallet's Ed25519 signature (base58, as wallets' ``signMessage``
  returns it) over the UTF-8 bytes of :func:`message`, which names the chain, the
  payment (signature and account index), the destination and the amount, so it cannot be
  replayed for another refund.
* ``claim_secret``: the invoice's claim secret, compared as :mod:`proof` does.
"""

from __future__ import annotations

from solders.pubkey import Pubkey
from solders.signature import Signature

from watcher import keys
from watcher.refunds import model, proof


def message(chain: str, signature: str, account_index: int, destination: str, amount: int) -> str:
    """The exact text a payer signs to have a refund of their payment sent elsewhere."""
    return (
        "Refund my USDC payment to another address\n"
        f"chain: {chain}\n"
        f"payment: {signature}:{account_index}\n"
        f"to: {destination}\n"
        f"amount: {amount}"
    )


def signed_by(text: str, signature: str, signer: str) -> bool:
    """Whether ``signature`` (base58) is ``signer``'s Ed25519 signature of ``text``."""
    try:
        sig = Signature.from_string(signature.strip())
        return bool(sig.verify(Pubkey.from_string(signer), text.encode("utf-8")))
    except ValueError:
        return False


def program_refusal(source: str) -> model.Refused:
    """The answer for a source that no key controls, and no proof of another address."""
    return model.Refused(
        409,
        "source_is_program",
        f"the payment came from {source}, a program-derived address (no key holds it): "
        "money sent back there may reach nobody who paid",
        "ask the payer for a wallet they control, signed by the sending wallet "
        "(signature over the refund message) or proven with the invoice's claim_secret",
    )


def judge(
    *,
    chain: str,
    tx_hash: str,
    log_index: int,
    source: str | None,
    secret_hash: bytes | None,
    given: proof.Claimed,
) -> tuple[str, str]:
    """(destination, proof) for a Solana payment, or :class:`model.Refused`."""
    dest = (given.destination or "").strip() or None
    if dest is not None and not keys.is_solana_pubkey(dest):
        raise model.Refused(
            422,
            "invalid_destination",
            "the destination is not a Solana address",
            "give the wallet's public key (32 bytes of base58)",
        )
    if dest is None or dest == source:
        if source is None:
            raise model.Refused(
                409,
                "no_source",
                "the payment's sender is not known",
                "name a destination and prove it (signature or claim secret)",
            )
        if not Pubkey.from_string(source).is_on_curve():
            raise program_refusal(source)
        return source, "source"
    if given.claim_secret or not given.signature:
        # No signature: the claim secret is the only proof left (proof.judge_other says so).
        return proof.judge_other(source=source, secret_hash=secret_hash, given=given)
    if given.amount is None:
        raise model.Refused(
            422,
            "amount_required",
            "a signed destination names the amount: pass the same amount",
            "send amount (base units) as the payer signed it",
        )
    text = message(chain, tx_hash, log_index, dest, given.amount)
    if source is None or not signed_by(text, given.signature, source):
        raise model.Refused(
            403,
            "bad_proof",
            "the signature is not the payment's sender's over this refund",
            "have the sending wallet sign the refund message (signMessage; docs)",
        )
    return dest, "signature"
