"""Who may receive a Solana refund: the source wallet (not a program-derived address), or a
wallet proven by the source's signature over the refund message or by the claim secret."""

from __future__ import annotations

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from watcher import keys
from watcher.refunds import model, proof, solana_proof

PAYMENT = ("5" * 87, 3)  # a payment's signature and account index


def judge(source: str | None, given: proof.Claimed, secret: str | None = None) -> tuple[str, str]:
    return solana_proof.judge(
        chain="solana",
        tx_hash=PAYMENT[0],
        log_index=PAYMENT[1],
        source=source,
        secret_hash=keys.sha256(secret) if secret else None,
        given=given,
    )


def signed(kp: Keypair, dest: str, amount: int, chain: str = "solana") -> str:
    text = solana_proof.message(chain, PAYMENT[0], PAYMENT[1], dest, amount)
    return str(kp.sign_message(text.encode()))


def refused(source: str | None, given: proof.Claimed, secret: str | None = None) -> str:
    with pytest.raises(model.Refused) as exc:
        judge(source, given, secret)
    return exc.value.code


def test_the_source_wallet_is_the_default_and_a_program_address_is_refused() -> None:
    payer = str(Keypair().pubkey())
    assert judge(payer, proof.Claimed()) == (payer, "source")
    assert judge(payer, proof.Claimed(destination=payer)) == (payer, "source")
    pda, _ = Pubkey.find_program_address(
        [b"vault"], Pubkey.from_string("11111111111111111111111111111112")
    )
    assert not pda.is_on_curve()
    assert refused(str(pda), proof.Claimed()) == "source_is_program"
    assert refused(None, proof.Claimed()) == "no_source"


def test_another_wallet_needs_the_source_signature_over_this_refund() -> None:
    payer, elsewhere = Keypair(), str(Keypair().pubkey())
    src = str(payer.pubkey())
    good = signed(payer, elsewhere, 700_000)
    assert judge(src, proof.Claimed(elsewhere, good, amount=700_000)) == (elsewhere, "signature")
    assert refused(src, proof.Claimed(elsewhere, good, amount=700_001)) == "bad_proof"
    assert refused(src, proof.Claimed(elsewhere, good)) == "amount_required"
    other = str(Keypair().pubkey())
    assert refused(src, proof.Claimed(other, good, amount=700_000)) == "bad_proof"
    stranger = signed(Keypair(), elsewhere, 700_000)
    assert refused(src, proof.Claimed(elsewhere, stranger, amount=700_000)) == "bad_proof"
    devnet = signed(payer, elsewhere, 700_000, chain="solana-devnet")
    assert refused(src, proof.Claimed(elsewhere, devnet, amount=700_000)) == "bad_proof"
    assert refused(src, proof.Claimed(elsewhere, "not-a-signature", amount=1)) == "bad_proof"
    assert refused(src, proof.Claimed(elsewhere)) == "proof_required"
    assert refused(src, proof.Claimed("0x" + "ab" * 20)) == "invalid_destination"


def test_a_claim_secret_proves_another_wallet() -> None:
    src, elsewhere = str(Keypair().pubkey()), str(Keypair().pubkey())
    ok = proof.Claimed(elsewhere, claim_secret="s3cret")
    assert judge(src, ok, secret="s3cret") == (elsewhere, "claim_secret")
    assert refused(src, ok, secret="other") == "bad_proof"
    assert refused(src, ok) == "bad_proof"  # no invoice, no secret to compare with
