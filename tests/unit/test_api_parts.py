"""Pure parts of the API: hash spelling, claim text, signatures, money formatting (no I/O)."""

from __future__ import annotations

import pytest
from eth_account import Account
from solders.keypair import Keypair

from api import chains, claims, invoices
from api.errors import ApiError
from devkit.api_support import evm_sign, solana_sign
from watcher import money


def test_evm_hashes_in_any_case_normalise_to_lowercase() -> None:
    h = "0x" + "Ab" * 32
    assert chains.normalise_tx_hash("base", h) == "0x" + "ab" * 32
    assert chains.normalise_tx_hash("ethereum", "  " + h.upper().replace("0X", "0x")) == h.lower()
    for bad in ("0x1234", "ab" * 32, "0x" + "zz" * 32, "0x" + "ab" * 33):
        with pytest.raises(ApiError) as err:
            chains.normalise_tx_hash("base", bad)
        assert err.value.status == 400 and err.value.error == "malformed_tx_hash"


def test_solana_signatures_are_validated_not_changed() -> None:
    sig = str(Keypair().sign_message(b"x"))
    assert chains.normalise_tx_hash("solana", sig) == sig
    with pytest.raises(ApiError):
        chains.normalise_tx_hash("solana", "0" + sig[1:])  # '0' is not base58


def test_claim_message_names_chain_and_hash() -> None:
    text = claims.claim_message("base", "0xabc")
    assert text.splitlines()[1:] == ["chain: base", "tx: 0xabc"]


def test_evm_signer_recovery_and_junk() -> None:
    key = Account.create()
    tx = "0x" + "12" * 32
    sig = evm_sign(key, "base", tx)
    message = claims.claim_message("base", tx)
    assert claims.recover_evm_signer(message, sig) == key.address.lower()
    assert claims.recover_evm_signer(claims.claim_message("ethereum", tx), sig) != (
        key.address.lower()
    )
    for junk in ("", "0x", "0x" + "00" * 65, "nothex", sig[:-2]):
        assert claims.recover_evm_signer(message, junk) is None


def test_ed25519_claims_in_base58_and_base64() -> None:
    import base64

    kp = Keypair()
    sig58 = solana_sign(kp, "5" * 88)
    owner = str(kp.pubkey())
    message = claims.claim_message("solana", "5" * 88)
    assert claims.ed25519_valid(owner, message, sig58)
    sig64 = base64.b64encode(bytes(kp.sign_message(message.encode()))).decode()
    assert claims.ed25519_valid(owner, message, sig64)
    assert not claims.ed25519_valid(str(Keypair().pubkey()), message, sig58)
    assert not claims.ed25519_valid(owner, message, "!!")
    assert not claims.ed25519_valid("not-a-key", message, sig58)


def test_money_is_formatted_exactly() -> None:
    assert money.usd(100_000) == "0.10"  # was invoices.usd: "0.100000"
    assert money.usd(1_234_567) == "1.234567"
    url = invoices.solana_pay_url("Own3r", 1_500_000, "M1nt", "Ref")
    assert url.startswith("solana:Own3r?amount=1.5&spl-token=M1nt&reference=Ref")
    assert "amount=0.000001" in invoices.solana_pay_url("o", 1, "m", "r")


@pytest.mark.parametrize(
    ("answer", "yes"),
    [
        ("0x1626ba7e" + "00" * 28, True),
        ("0x1626BA7E" + "00" * 28, True),  # hex case does not matter
        ("0x1626ba7e", False),  # the bare selector
        ("0x1626ba7e" + "00" * 28 + "00" * 32, False),  # a second word
        ("0x1626ba7e" + "00" * 27 + "01", False),  # dirty low bytes
        ("0x1626ba7e" + "ab" * 60, False),  # an echo of the calldata
        ("0xffffffff" + "00" * 28, False),
        ("0x", False),
        (None, False),
    ],
)
def test_eip1271_yes_is_the_whole_magic_word(answer: object, yes: bool) -> None:
    assert claims.eip1271_says_yes(answer) is yes
